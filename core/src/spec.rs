//! The transform spec: `{"ops": [{"op": NAME, ...params}, ...]}`, parsed strictly.
//!
//! Unknown ops or fields, wrong types and impossible values are errors naming the op and field.
//! Parameter names and defaults follow librosa (audio) and Pillow/torchvision (images).

use serde_json::{Map, Value};

use crate::audio::stft::frame_count;
use crate::error::{Error, Result, SpecLocation};
use crate::image::ImageDims;
use crate::limits::{
    DEFAULT_MAX_PIXELS, MAX_FIX_LENGTH, MAX_HOP_LENGTH, MAX_IMAGE_SIDE, MAX_MEL_BANDS, MAX_N_FFT,
    MAX_OUTPUT_PIXELS, MAX_SAMPLE_RATE,
};
use crate::tensor::DType;

/// A validated transform spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub ops: Vec<Op>,
    /// `decode_image`'s `max_pixels`, kept beside the ops (rather than in `Op::DecodeImage`, so
    /// code matching that variant keeps compiling); see [`Spec::max_pixels`].
    max_pixels: Option<u64>,
}

/// What a spec starts from, fixed by its first op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Audio,
    Image,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    LoadAudio(LoadAudio),
    /// librosa `util.fix_length(y, size=size)`: every channel cut to `size` samples or padded
    /// with zeros at the end. Only directly after `load_audio`: it runs while the audio is
    /// decoded (after resampling and `mono`), so every backend receives clips of one length and
    /// [`Spec::output`] knows the output shape.
    FixLength {
        size: usize,
    },
    Stft(StftParams),
    Magnitude {
        power: f32,
    },
    Mel(MelParams),
    PowerToDb(DbParams),
    Mfcc {
        n_mfcc: usize,
    },
    /// Its `max_pixels` field is kept as [`Spec::max_pixels`].
    DecodeImage {
        mode: Option<ImageMode>,
    },
    Resize(ResizeParams),
    CenterCrop {
        height: usize,
        width: usize,
    },
    ToFloat,
    Normalize {
        mean: Vec<f32>,
        std: Vec<f32>,
    },
    Layout {
        to: Layout,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::LoadAudio(_) => "load_audio",
            Op::FixLength { .. } => "fix_length",
            Op::Stft(_) => "stft",
            Op::Magnitude { .. } => "magnitude",
            Op::Mel(_) => "mel",
            Op::PowerToDb(_) => "power_to_db",
            Op::Mfcc { .. } => "mfcc",
            Op::DecodeImage { .. } => "decode_image",
            Op::Resize(_) => "resize",
            Op::CenterCrop { .. } => "center_crop",
            Op::ToFloat => "to_float",
            Op::Normalize { .. } => "normalize",
            Op::Layout { .. } => "layout",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadAudio {
    /// Target rate in Hz. Default: `None`, keep the file's rate (librosa `sr=None`).
    pub sample_rate: Option<u32>,
    /// Default: true (librosa `to_mono`: mean over channels).
    pub mono: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    Hann,
    Hamming,
    Ones,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StftParams {
    /// Default: 2048, as librosa.
    pub n_fft: usize,
    /// Default: `n_fft / 4`.
    pub hop_length: usize,
    /// Default: `n_fft`; the window is zero-padded to `n_fft`, centred.
    pub win_length: usize,
    /// Default: periodic Hann.
    pub window: WindowKind,
    /// Default: true.
    pub center: bool,
    /// Default: `constant` (zeros), as librosa >= 0.10.
    pub pad_mode: PadMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MelNorm {
    Slaney,
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MelParams {
    /// Default: the audio's rate after `load_audio`.
    pub sample_rate: Option<u32>,
    /// Default: 128.
    pub n_mels: usize,
    /// Default: 0.
    pub fmin: f64,
    /// Default: `sample_rate / 2`.
    pub fmax: Option<f64>,
    /// Default: false (Slaney mel scale).
    pub htk: bool,
    /// Default: `slaney` area normalisation; JSON `null` means none.
    pub norm: MelNorm,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DbRef {
    Value(f64),
    /// librosa `ref=np.max`: relative to the maximum over the whole array.
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbParams {
    /// Default: 1.0.
    pub reference: DbRef,
    /// Default: 1e-10.
    pub amin: f64,
    /// Default: 80.0; JSON `null` disables clipping.
    pub top_db: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageMode {
    L,
    Rgb,
    Rgba,
}

impl ImageMode {
    pub fn channels(self) -> usize {
        match self {
            ImageMode::L => 1,
            ImageMode::Rgb => 3,
            ImageMode::Rgba => 4,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizeSize {
    Exact {
        height: usize,
        width: usize,
    },
    /// torchvision `Resize(int)`: the shorter side becomes this, the longer keeps the aspect ratio
    /// (truncated).
    ShorterSide(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResizeParams {
    pub size: ResizeSize,
    /// Default: `bilinear`, as torchvision's `Resize`.
    pub filter: Filter,
    /// Default: true: downscaling widens the filter support by the scale factor, as Pillow always
    /// does. `false` keeps the unscaled support (aliasing, like torchvision `antialias=False`).
    pub antialias: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    Hwc,
    Chw,
}

impl Spec {
    /// Parses and validates a spec from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Spec {
            location: top_location(None),
            message: format!("invalid JSON: {e}"),
        })?;
        Self::from_value(&value)
    }

    pub fn from_value(value: &Value) -> Result<Self> {
        let root = value
            .as_object()
            .ok_or_else(|| spec_error(None, "must be a JSON object"))?;
        if let Some(key) = root.keys().find(|k| k.as_str() != "ops") {
            return Err(spec_error(Some(key), "unknown field"));
        }
        let ops_value = root
            .get("ops")
            .ok_or_else(|| spec_error(Some("ops"), "missing"))?;
        let list = ops_value
            .as_array()
            .ok_or_else(|| spec_error(Some("ops"), "must be an array of ops"))?;
        if list.is_empty() {
            return Err(spec_error(Some("ops"), "must contain at least one op"));
        }
        let mut max_pixels = Some(DEFAULT_MAX_PIXELS);
        let ops = list
            .iter()
            .enumerate()
            .map(|(index, v)| parse_op(index, v, &mut max_pixels))
            .collect::<Result<Vec<_>>>()?;
        let spec = Spec { ops, max_pixels };
        spec.check_order()?;
        Ok(spec)
    }

    /// A spec of `ops` as given (not validated; [`Spec::from_json`] validates), with
    /// `decode_image`'s default `max_pixels`.
    pub fn from_ops(ops: Vec<Op>) -> Self {
        Spec {
            ops,
            max_pixels: Some(DEFAULT_MAX_PIXELS),
        }
    }

    /// `decode_image`'s `max_pixels`: Pillow's `Image.MAX_IMAGE_PIXELS`. An image of more than
    /// twice this many pixels (`width * height`, from its header) is refused before it is
    /// decoded; one of more than this many decodes with a [`crate::Warning`]. `None` (JSON
    /// `null`) checks nothing, as Pillow's `MAX_IMAGE_PIXELS = None`. Default (field absent):
    /// [`DEFAULT_MAX_PIXELS`], Pillow's 89,478,485, so images above 178,956,970 pixels are
    /// refused. Audio specs ignore it.
    pub fn max_pixels(&self) -> Option<u64> {
        self.max_pixels
    }

    /// The same spec with another `max_pixels` (see [`Spec::max_pixels`]).
    pub fn with_max_pixels(mut self, max_pixels: Option<u64>) -> Self {
        self.max_pixels = max_pixels;
        self
    }

    pub fn source_kind(&self) -> SourceKind {
        match self.ops.first() {
            Some(Op::LoadAudio(_)) => SourceKind::Audio,
            _ => SourceKind::Image,
        }
    }

    /// `fix_length`'s `size`: the length, in samples, every decoded clip is cut or padded to.
    /// `None` when the spec has no `fix_length`.
    pub fn fix_length(&self) -> Option<usize> {
        self.ops.iter().find_map(|op| match op {
            Op::FixLength { size } => Some(*size),
            _ => None,
        })
    }

    /// Checks that every op receives the kind of data it accepts.
    fn check_order(&self) -> Result<()> {
        self.walk().map(|_| ()).map_err(|(_, error)| error)
    }

    /// The dtype of what the spec produces, and its shape where every input gives the same one.
    ///
    /// The shape is fixed for image specs that decode to a given `mode` and whose last
    /// `resize`/`center_crop` sets an exact size, and for mono audio specs with `fix_length`
    /// (e.g. `[80, 101]` for an 80-band log-mel with `n_fft` 400 and hop 160 over 16000
    /// samples). It is `None` for other audio (the clip length varies; with `mono: false` the
    /// file decides the channels), for `decode_image` without `mode` (the file's mode decides
    /// the channels), for sizes that follow the input (`resize` with `shorter_side` and no crop
    /// after it) and for specs every input fails (an uncentred `stft` longer than
    /// `fix_length`). The dtype is `C64` for a spec ending with a bare `stft`.
    pub fn output(&self) -> SpecOutput {
        // A validated spec always walks to the end; a hand-built invalid one keeps the last
        // stage it reached rather than panicking.
        let stage = self.walk().unwrap_or_else(|(stage, _)| stage);
        SpecOutput {
            dtype: stage.dtype(),
            shape: self.fixed_shape(),
        }
    }

    fn fixed_shape(&self) -> Option<Vec<usize>> {
        if let Some(Op::LoadAudio(load)) = self.ops.first() {
            return self.fixed_audio_shape(load);
        }
        let Some(Op::DecodeImage { mode: Some(mode) }) = self.ops.first() else {
            return None;
        };
        // The size is a placeholder until a `resize`/`center_crop` fixes it; channels and
        // layout follow the same rules as the plan's (`ImageDims`).
        let mut dims = ImageDims::decoded(0, 0, *mode);
        let mut fixed = false;
        for op in self.ops.iter().skip(1) {
            match op {
                Op::Resize(ResizeParams {
                    size: ResizeSize::Exact { height, width },
                    ..
                }) => {
                    dims = dims.with_size(*height, *width);
                    fixed = true;
                }
                Op::Resize(_) => fixed = false,
                Op::CenterCrop { height, width } => {
                    dims = dims.with_size(*height, *width);
                    fixed = true;
                }
                Op::Layout { to } => dims = dims.laid_out(*to),
                _ => {}
            }
        }
        fixed.then(|| dims.shape())
    }

    /// The shape of a mono audio spec with `fix_length`, as the backends produce it.
    fn fixed_audio_shape(&self, load: &LoadAudio) -> Option<Vec<usize>> {
        let size = self.fix_length()?;
        // Without `mono` the file decides the channel axis.
        if !load.mono {
            return None;
        }
        let mut shape = vec![size];
        for op in self.ops.iter().skip(1) {
            // After `stft` the shape is (bins, frames); `.get(1)?` keeps a hand-built spec in
            // the wrong order from panicking.
            shape = match op {
                Op::FixLength { .. } | Op::Magnitude { .. } | Op::PowerToDb(_) => shape,
                Op::Stft(params) => vec![params.n_fft / 2 + 1, frame_count(params, size).ok()?],
                Op::Mel(params) => vec![params.n_mels, *shape.get(1)?],
                Op::Mfcc { n_mfcc } if n_mfcc <= shape.first()? => vec![*n_mfcc, *shape.get(1)?],
                _ => return None,
            };
        }
        Some(shape)
    }

    /// Follows the data through the ops: the stage after the last op, or the first op that does
    /// not accept its input (with the stage reached before it).
    fn walk(&self) -> std::result::Result<Stage, (Stage, Error)> {
        let mut stage = match self.ops.first() {
            Some(Op::LoadAudio(_)) => Stage::Waveform,
            Some(Op::DecodeImage { .. }) => Stage::ImageU8 { laid_out: false },
            Some(other) => {
                let why = "the first op must be `load_audio` or `decode_image`";
                return Err((Stage::Waveform, op_error(0, other.name(), None, why)));
            }
            None => {
                return Err((
                    Stage::Waveform,
                    spec_error(Some("ops"), "must contain at least one op"),
                ))
            }
        };
        for (index, op) in self.ops.iter().enumerate().skip(1) {
            if matches!(op, Op::FixLength { .. }) && index != 1 {
                return Err((stage, op_error(index, op.name(), None, FIX_LENGTH_PLACE)));
            }
            stage = stage
                .after(op)
                .map_err(|why| (stage, op_error(index, op.name(), None, why)))?;
        }
        Ok(stage)
    }
}

/// Why a `fix_length` elsewhere is refused.
const FIX_LENGTH_PLACE: &str = "must come directly after `load_audio`: it cuts or pads the decoded \
                                waveform before any other op";

/// What a spec's output is: see [`Spec::output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecOutput {
    pub dtype: DType,
    /// The output shape when every input gives the same one, else `None`.
    pub shape: Option<Vec<usize>>,
}

/// The kind of data between two ops.
#[derive(Debug, PartialEq, Clone, Copy)]
enum Stage {
    Waveform,
    Complex,
    Spectrogram,
    MelSpectrogram,
    Decibels { mel: bool },
    Cepstrum,
    ImageU8 { laid_out: bool },
    ImageF32,
}

impl Stage {
    fn dtype(self) -> DType {
        match self {
            Stage::Complex => DType::C64,
            Stage::ImageU8 { .. } => DType::U8,
            _ => DType::F32,
        }
    }

    /// The stage after `op`, or why `op` cannot take this stage's data.
    fn after(self, op: &Op) -> std::result::Result<Stage, &'static str> {
        Ok(match (op, self) {
            (Op::LoadAudio(_) | Op::DecodeImage { .. }, _) => return Err("may only be the first op"),
            (Op::FixLength { .. }, Stage::Waveform) => Stage::Waveform,
            (Op::FixLength { .. }, _) => return Err(FIX_LENGTH_PLACE),
            (Op::Stft(_), Stage::Waveform) => Stage::Complex,
            (Op::Stft(_), _) => return Err("needs a waveform (directly after `load_audio`)"),
            (Op::Magnitude { .. }, Stage::Complex) => Stage::Spectrogram,
            (Op::Magnitude { .. }, _) => return Err("needs a complex STFT (after `stft`)"),
            (Op::Mel(_), Stage::Spectrogram) => Stage::MelSpectrogram,
            (Op::Mel(_), _) => return Err("needs a magnitude/power spectrogram (after `magnitude`)"),
            (Op::PowerToDb(_), Stage::Spectrogram) => Stage::Decibels { mel: false },
            (Op::PowerToDb(_), Stage::MelSpectrogram) => Stage::Decibels { mel: true },
            (Op::PowerToDb(_), _) => return Err("needs a real spectrogram (after `magnitude` or `mel`)"),
            (Op::Mfcc { .. }, Stage::Decibels { mel: true }) => Stage::Cepstrum,
            (Op::Mfcc { .. }, _) => {
                return Err("needs a log-power mel spectrogram (`mel` then `power_to_db`)")
            }
            (Op::Resize(_), Stage::ImageU8 { laid_out: false }) => self,
            (Op::Resize(_), _) => return Err("needs a uint8 HWC image (before `to_float` and `layout`)"),
            (Op::CenterCrop { .. }, Stage::ImageU8 { .. } | Stage::ImageF32) => self,
            (Op::ToFloat, Stage::ImageU8 { .. }) => Stage::ImageF32,
            (Op::ToFloat, _) => return Err("needs a uint8 image"),
            (Op::Normalize { .. }, Stage::ImageF32) => Stage::ImageF32,
            (Op::Normalize { .. }, _) => return Err("needs a float image (add `to_float` before it)"),
            (Op::Layout { .. }, Stage::ImageU8 { .. }) => Stage::ImageU8 { laid_out: true },
            (Op::Layout { .. }, Stage::ImageF32) => Stage::ImageF32,
            (Op::CenterCrop { .. } | Op::Layout { .. }, _) => return Err("needs an image"),
        })
    }
}

fn top_location(field: Option<&str>) -> SpecLocation {
    SpecLocation {
        index: None,
        op: None,
        field: field.map(str::to_owned),
    }
}

fn spec_error(field: Option<&str>, message: &str) -> Error {
    Error::Spec {
        location: top_location(field),
        message: message.to_owned(),
    }
}

fn op_error(index: usize, op: &str, field: Option<&str>, message: impl Into<String>) -> Error {
    Error::Spec {
        location: SpecLocation {
            index: Some(index),
            op: Some(op.to_owned()),
            field: field.map(str::to_owned),
        },
        message: message.into(),
    }
}

/// A field as written: absent, explicit `null`, or a value. librosa gives `None` a meaning of
/// its own for some parameters (`top_db=None`, `norm=None`), so absent and null differ.
enum Field<'a> {
    Absent,
    Null,
    Value(&'a Value),
}

struct OpReader<'a> {
    index: usize,
    name: &'a str,
    fields: &'a Map<String, Value>,
    seen: Vec<&'static str>,
}

impl<'a> OpReader<'a> {
    fn error(&self, field: &str, message: impl Into<String>) -> Error {
        op_error(self.index, self.name, Some(field), message)
    }

    fn field(&mut self, key: &'static str) -> Field<'a> {
        self.seen.push(key);
        match self.fields.get(key) {
            None => Field::Absent,
            Some(Value::Null) => Field::Null,
            Some(v) => Field::Value(v),
        }
    }

    fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        match self.field(key) {
            Field::Value(v) => Some(v),
            _ => None,
        }
    }

    /// An integer in `1..=max`, or `None` when absent or null. Values beyond `max` (which keeps
    /// every later product within `usize`, also on 32-bit targets) are errors, never truncated.
    fn positive_int(&mut self, key: &'static str, max: usize) -> Result<Option<usize>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(0) | None => Err(self.error(key, format!("must be a positive integer, got {v}"))),
                Some(n) => match usize::try_from(n) {
                    Ok(n) if n <= max => Ok(Some(n)),
                    _ => Err(self.error(key, format!("must be at most {max}, got {n}"))),
                },
            },
        }
    }

    fn required_int(&mut self, key: &'static str, max: usize) -> Result<usize> {
        self.positive_int(key, max)?
            .ok_or_else(|| self.error(key, "is required"))
    }

    fn sample_rate(&mut self, key: &'static str) -> Result<Option<u32>> {
        let rate = self.positive_int(key, MAX_SAMPLE_RATE as usize)?;
        // In range, so the conversion cannot fail.
        Ok(rate.and_then(|r| u32::try_from(r).ok()))
    }

    /// `height` x `width` of an image output, each side and their product bounded.
    fn image_size(&mut self, height: usize, width: usize) -> Result<()> {
        match height.checked_mul(width) {
            Some(pixels) if pixels <= MAX_OUTPUT_PIXELS => Ok(()),
            _ => Err(self.error(
                "width",
                format!(
                    "{height} x {width} is {} pixels, above the limit of {MAX_OUTPUT_PIXELS}",
                    height as u128 * width as u128
                ),
            )),
        }
    }

    fn number(&mut self, key: &'static str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.error(key, format!("must be a number, got {v}"))),
            },
        }
    }

    fn boolean(&mut self, key: &'static str, default: bool) -> Result<bool> {
        match self.value(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.error(key, format!("must be true or false, got {v}"))),
        }
    }

    fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)]) -> Result<Option<T>> {
        let Some(v) = self.value(key) else { return Ok(None) };
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let text = v.as_str().map(str::to_ascii_lowercase);
        options
            .iter()
            .find(|(n, _)| Some(n.to_ascii_lowercase()) == text)
            .map(|(_, t)| Some(*t))
            .ok_or_else(|| self.error(key, format!("must be one of {names:?}, got {v}")))
    }

    fn number_list(&mut self, key: &'static str) -> Result<Vec<f32>> {
        let v = self.value(key).ok_or_else(|| self.error(key, "is required"))?;
        let items = match v {
            Value::Array(items) if !items.is_empty() => items,
            _ => return Err(self.error(key, format!("must be a non-empty list of numbers, got {v}"))),
        };
        items
            .iter()
            .map(|x| match x.as_f64() {
                Some(f) if (f as f32).is_finite() => Ok(f as f32),
                _ => Err(self.error(
                    key,
                    format!("must contain only numbers that fit a float32, got {x}"),
                )),
            })
            .collect()
    }

    fn finish(self) -> Result<()> {
        match self
            .fields
            .keys()
            .find(|k| k.as_str() != "op" && !self.seen.contains(&k.as_str()))
        {
            Some(unknown) => Err(op_error(self.index, self.name, Some(unknown), "unknown field")),
            None => Ok(()),
        }
    }
}

/// Parses one op; `decode_image` also sets `max_pixels`.
fn parse_op(index: usize, value: &Value, max_pixels: &mut Option<u64>) -> Result<Op> {
    let fields = value.as_object().ok_or_else(|| Error::Spec {
        location: SpecLocation {
            index: Some(index),
            op: None,
            field: None,
        },
        message: format!("must be an object with an `op` field, got {value}"),
    })?;
    let name = match fields.get("op") {
        Some(Value::String(s)) => s.as_str(),
        _ => {
            return Err(Error::Spec {
                location: SpecLocation {
                    index: Some(index),
                    op: None,
                    field: Some("op".into()),
                },
                message: "missing or not a string".into(),
            })
        }
    };
    let mut r = OpReader {
        index,
        name,
        fields,
        seen: Vec::new(),
    };
    let op = match name {
        "load_audio" => {
            let sample_rate = r.sample_rate("sample_rate")?;
            Op::LoadAudio(LoadAudio {
                sample_rate,
                mono: r.boolean("mono", true)?,
            })
        }
        "fix_length" => Op::FixLength {
            size: r.required_int("size", MAX_FIX_LENGTH)?,
        },
        "stft" => {
            let n_fft = r.positive_int("n_fft", MAX_N_FFT)?.unwrap_or(2048);
            let win_length = r.positive_int("win_length", MAX_N_FFT)?.unwrap_or(n_fft);
            if win_length > n_fft {
                return Err(r.error(
                    "win_length",
                    format!("must be <= n_fft ({n_fft}), got {win_length}"),
                ));
            }
            let hop_length = r
                .positive_int("hop_length", MAX_HOP_LENGTH)?
                .unwrap_or((n_fft / 4).max(1));
            let window = r
                .choice(
                    "window",
                    &[
                        ("hann", WindowKind::Hann),
                        ("hamming", WindowKind::Hamming),
                        ("ones", WindowKind::Ones),
                        ("boxcar", WindowKind::Ones),
                    ],
                )?
                .unwrap_or(WindowKind::Hann);
            let center = r.boolean("center", true)?;
            let pad_mode = r
                .choice(
                    "pad_mode",
                    &[("constant", PadMode::Constant), ("reflect", PadMode::Reflect)],
                )?
                .unwrap_or(PadMode::Constant);
            Op::Stft(StftParams {
                n_fft,
                hop_length,
                win_length,
                window,
                center,
                pad_mode,
            })
        }
        "magnitude" => {
            let power = r.number("power")?.unwrap_or(1.0);
            // Stored as f32: a power that overflows it would make every value infinite.
            if power <= 0.0 || !(power as f32).is_finite() {
                return Err(r.error(
                    "power",
                    format!("must be > 0 and at most {}, got {power}", f32::MAX),
                ));
            }
            Op::Magnitude { power: power as f32 }
        }
        "mel" => {
            let sample_rate = r.sample_rate("sample_rate")?;
            let n_mels = r.positive_int("n_mels", MAX_MEL_BANDS)?.unwrap_or(128);
            let fmin = r.number("fmin")?.unwrap_or(0.0);
            if fmin < 0.0 {
                return Err(r.error("fmin", format!("must be >= 0, got {fmin}")));
            }
            let fmax = r.number("fmax")?;
            if let Some(fmax) = fmax {
                if fmax <= fmin {
                    return Err(r.error("fmax", format!("must be > fmin ({fmin}), got {fmax}")));
                }
            }
            let htk = r.boolean("htk", false)?;
            let norm = match r.field("norm") {
                Field::Absent => MelNorm::Slaney,
                Field::Null => MelNorm::None,
                Field::Value(Value::String(s)) if s == "slaney" => MelNorm::Slaney,
                Field::Value(v) => {
                    return Err(r.error("norm", format!("must be \"slaney\" or null, got {v}")))
                }
            };
            Op::Mel(MelParams {
                sample_rate,
                n_mels,
                fmin,
                fmax,
                htk,
                norm,
            })
        }
        "power_to_db" => {
            let reference = match r.value("ref") {
                None => DbRef::Value(1.0),
                Some(Value::String(s)) if s == "max" => DbRef::Max,
                Some(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => DbRef::Value(x),
                    _ => return Err(r.error("ref", format!("must be a number >= 0 or \"max\", got {v}"))),
                },
            };
            let amin = r.number("amin")?.unwrap_or(1e-10);
            if amin <= 0.0 {
                return Err(r.error("amin", format!("must be > 0, got {amin}")));
            }
            let top_db = match r.field("top_db") {
                Field::Absent => Some(80.0),
                Field::Null => None,
                Field::Value(v) => match v.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => Some(x),
                    _ => return Err(r.error("top_db", format!("must be a number >= 0 or null, got {v}"))),
                },
            };
            Op::PowerToDb(DbParams {
                reference,
                amin,
                top_db,
            })
        }
        "mfcc" => Op::Mfcc {
            n_mfcc: r.positive_int("n_mfcc", MAX_MEL_BANDS)?.unwrap_or(20),
        },
        "decode_image" => {
            *max_pixels = match r.field("max_pixels") {
                Field::Absent => Some(DEFAULT_MAX_PIXELS),
                Field::Null => None,
                Field::Value(v) => match v.as_u64() {
                    Some(n) if n >= 1 => Some(n),
                    _ => {
                        return Err(r.error(
                            "max_pixels",
                            format!("must be a positive integer or null (no limit), got {v}"),
                        ))
                    }
                },
            };
            Op::DecodeImage {
                mode: r.choice(
                    "mode",
                    &[
                        ("L", ImageMode::L),
                        ("RGB", ImageMode::Rgb),
                        ("RGBA", ImageMode::Rgba),
                    ],
                )?,
            }
        }
        "resize" => {
            let height = r.positive_int("height", MAX_IMAGE_SIDE)?;
            let width = r.positive_int("width", MAX_IMAGE_SIDE)?;
            let shorter = r.positive_int("shorter_side", MAX_IMAGE_SIDE)?;
            let size = match (height, width, shorter) {
                (Some(height), Some(width), None) => {
                    r.image_size(height, width)?;
                    ResizeSize::Exact { height, width }
                }
                (None, None, Some(side)) => ResizeSize::ShorterSide(side),
                (_, _, Some(_)) => {
                    return Err(r.error(
                        "shorter_side",
                        "give either `shorter_side` or `height`+`width`, not both",
                    ))
                }
                (None, _, None) => return Err(r.error("height", "is required (or give `shorter_side`)")),
                (_, None, None) => return Err(r.error("width", "is required (or give `shorter_side`)")),
            };
            let filter = r
                .choice(
                    "filter",
                    &[
                        ("nearest", Filter::Nearest),
                        ("bilinear", Filter::Bilinear),
                        ("bicubic", Filter::Bicubic),
                        ("lanczos", Filter::Lanczos),
                    ],
                )?
                .unwrap_or(Filter::Bilinear);
            let antialias = r.boolean("antialias", true)?;
            Op::Resize(ResizeParams {
                size,
                filter,
                antialias,
            })
        }
        "center_crop" => {
            let height = r.required_int("height", MAX_IMAGE_SIDE)?;
            let width = r.required_int("width", MAX_IMAGE_SIDE)?;
            r.image_size(height, width)?;
            Op::CenterCrop { height, width }
        }
        "to_float" => Op::ToFloat,
        "normalize" => {
            let mean = r.number_list("mean")?;
            let std = r.number_list("std")?;
            if mean.len() != std.len() {
                return Err(r.error(
                    "std",
                    format!(
                        "must have as many values as `mean` ({}), got {}",
                        mean.len(),
                        std.len()
                    ),
                ));
            }
            if std.contains(&0.0) {
                return Err(r.error("std", "must not contain 0"));
            }
            Op::Normalize { mean, std }
        }
        "layout" => {
            let to = r.choice("to", &[("chw", Layout::Chw), ("hwc", Layout::Hwc)])?;
            Op::Layout {
                to: to.ok_or_else(|| r.error("to", "is required (\"chw\")"))?,
            }
        }
        other => {
            return Err(Error::Spec {
                location: SpecLocation {
                    index: Some(index),
                    op: Some(other.to_owned()),
                    field: None,
                },
                message: "unknown op; known ops: load_audio, fix_length, stft, magnitude, mel, power_to_db, \
                          mfcc, decode_image, resize, center_crop, to_float, normalize, layout"
                    .into(),
            })
        }
    };
    r.finish()?;
    Ok(op)
}

#[cfg(test)]
mod tests {
    use image::ImageEncoder;

    use super::*;
    use crate::{CpuBackend, Pipeline};

    fn output(ops: &str) -> SpecOutput {
        Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap().output()
    }

    fn png(width: u32, height: u32, color: image::ColorType) -> Vec<u8> {
        let channels = usize::from(color.channel_count());
        let pixels = vec![7u8; width as usize * height as usize * channels];
        let mut bytes = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bytes)
            .write_image(&pixels, width, height, color.into())
            .unwrap();
        bytes
    }

    #[test]
    fn fixed_image_shapes_follow_mode_and_layout() {
        let cases = [
            (
                r#"[{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "height": 4, "width": 6}]"#,
                vec![4, 6, 3],
            ),
            (
                r#"[{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "height": 4, "width": 6},
                 {"op": "layout", "to": "chw"}]"#,
                vec![3, 4, 6],
            ),
            (
                r#"[{"op": "decode_image", "mode": "L"}, {"op": "center_crop", "height": 5, "width": 2}]"#,
                vec![5, 2],
            ),
            (
                r#"[{"op": "decode_image", "mode": "L"}, {"op": "center_crop", "height": 5, "width": 2},
                 {"op": "layout", "to": "chw"}]"#,
                vec![1, 5, 2],
            ),
            // `layout` gives mode L a channel axis even when it stays HWC.
            (
                r#"[{"op": "decode_image", "mode": "L"}, {"op": "center_crop", "height": 5, "width": 2},
                 {"op": "layout", "to": "hwc"}]"#,
                vec![5, 2, 1],
            ),
            (
                r#"[{"op": "decode_image", "mode": "RGBA"}, {"op": "resize", "shorter_side": 9},
                 {"op": "center_crop", "height": 8, "width": 7}, {"op": "to_float"}]"#,
                vec![8, 7, 4],
            ),
        ];
        for (ops, shape) in cases {
            assert_eq!(output(ops).shape, Some(shape), "{ops}");
        }
    }

    #[test]
    fn size_dependent_and_audio_specs_have_no_fixed_shape() {
        for ops in [
            r#"[{"op": "decode_image", "mode": "RGB"}]"#,
            r#"[{"op": "decode_image"}, {"op": "resize", "height": 4, "width": 4}]"#,
            r#"[{"op": "decode_image", "mode": "RGB"}, {"op": "center_crop", "height": 8, "width": 8},
                {"op": "resize", "shorter_side": 4}]"#,
            r#"[{"op": "load_audio"}]"#,
            r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 8}, {"op": "magnitude"}, {"op": "mel", "n_mels": 4}]"#,
        ] {
            assert_eq!(output(ops).shape, None, "{ops}");
        }
    }

    #[test]
    fn dtypes_follow_the_last_op() {
        let cases = [
            (r#"[{"op": "load_audio"}]"#, DType::F32),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 8}]"#,
                DType::C64,
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 8}, {"op": "magnitude"}]"#,
                DType::F32,
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 8}, {"op": "magnitude"},
                 {"op": "mel", "n_mels": 4}, {"op": "power_to_db"}, {"op": "mfcc", "n_mfcc": 2}]"#,
                DType::F32,
            ),
            (r#"[{"op": "decode_image"}]"#, DType::U8),
            (
                r#"[{"op": "decode_image"}, {"op": "layout", "to": "chw"}]"#,
                DType::U8,
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "to_float"}, {"op": "layout", "to": "chw"}]"#,
                DType::F32,
            ),
        ];
        for (ops, dtype) in cases {
            assert_eq!(output(ops).dtype, dtype, "{ops}");
        }
    }

    #[test]
    fn fixed_shapes_match_what_the_pipeline_produces() {
        let specs = [
            r#"[{"op": "decode_image", "mode": "L"}, {"op": "resize", "height": 3, "width": 5}]"#,
            r#"[{"op": "decode_image", "mode": "L"}, {"op": "center_crop", "height": 3, "width": 5},
                {"op": "layout", "to": "hwc"}]"#,
            r#"[{"op": "decode_image", "mode": "RGB"}, {"op": "resize", "shorter_side": 6},
                {"op": "center_crop", "height": 4, "width": 4}, {"op": "to_float"}, {"op": "layout", "to": "chw"}]"#,
        ];
        let inputs = [
            png(10, 7, image::ColorType::Rgb8),
            png(3, 12, image::ColorType::L8),
        ];
        for ops in specs {
            let spec = Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
            let expected = spec.output();
            let pipeline = Pipeline::new(spec);
            for input in &inputs {
                let tensor = pipeline.run(&CpuBackend, input).unwrap();
                assert_eq!(Some(tensor.shape.clone()), expected.shape, "{ops}");
                assert_eq!(tensor.dtype(), expected.dtype, "{ops}");
            }
        }
    }

    /// A 16-bit WAV of `channels` x `frames` at `rate`, a ramp so trimming and padding show.
    fn wav(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cursor = std::io::Cursor::new(Vec::new());
        let mut writer = hound::WavWriter::new(&mut cursor, spec).unwrap();
        for i in 0..frames * usize::from(channels) {
            writer.write_sample((i % 30_000) as i16 + 1).unwrap();
        }
        writer.finalize().unwrap();
        cursor.into_inner()
    }

    const LOG_MEL: &str = r#"{"op": "stft", "n_fft": 400, "hop_length": 160}, {"op": "magnitude", "power": 2},
        {"op": "mel", "n_mels": 80}, {"op": "power_to_db"}"#;

    #[test]
    fn fix_length_fixes_audio_shapes() {
        let cases = [
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 16000}]"#.to_owned(),
                vec![16000],
            ),
            (
                format!(r#"[{{"op": "load_audio"}}, {{"op": "fix_length", "size": 16000}}, {LOG_MEL}]"#),
                vec![80, 101],
            ),
            (
                format!(
                    r#"[{{"op": "load_audio", "sample_rate": 8000}}, {{"op": "fix_length", "size": 16000}},
                     {LOG_MEL}, {{"op": "mfcc", "n_mfcc": 13}}]"#
                ),
                vec![13, 101],
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 1000}, {"op": "stft", "n_fft": 256,
                   "hop_length": 100, "center": false}, {"op": "magnitude"}]"#
                    .to_owned(),
                vec![129, 8],
            ),
        ];
        for (ops, shape) in cases {
            assert_eq!(output(&ops).shape, Some(shape), "{ops}");
        }
        let stft =
            output(r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 10}, {"op": "stft", "n_fft": 8}]"#);
        assert_eq!((stft.dtype, stft.shape), (DType::C64, Some(vec![5, 6])));
        for ops in [
            // The file decides the channels.
            r#"[{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 16000}]"#,
            // Every input fails: an uncentred window longer than the clip.
            r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 100}, {"op": "stft", "n_fft": 256, "center": false}]"#,
        ] {
            assert_eq!(output(ops).shape, None, "{ops}");
        }
    }

    #[test]
    fn fix_length_pads_and_trims_every_channel_before_the_backend() {
        let specs = [
            r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 1000}]"#.to_owned(),
            format!(r#"[{{"op": "load_audio"}}, {{"op": "fix_length", "size": 16000}}, {LOG_MEL}]"#),
            r#"[{"op": "load_audio", "sample_rate": 8000}, {"op": "fix_length", "size": 3000},
                {"op": "stft", "n_fft": 64}, {"op": "magnitude"}]"#
                .to_owned(),
        ];
        for ops in &specs {
            let spec = Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
            let expected = spec.output();
            assert!(expected.shape.is_some(), "{ops}");
            let pipeline = Pipeline::new(spec);
            for (channels, frames) in [(1, 10), (1, 999), (1, 1000), (2, 1001), (3, 40_000)] {
                let tensor = pipeline.run(&CpuBackend, &wav(16_000, channels, frames)).unwrap();
                assert_eq!(
                    Some(tensor.shape.clone()),
                    expected.shape,
                    "{ops} on {channels} x {frames}"
                );
            }
        }
        // The samples themselves: librosa's fix_length keeps the head and pads zeros at the end.
        let keep = |ops: &str, channels: u16, frames: usize| {
            let spec = Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
            let plain = Spec::from_json(r#"{"ops": [{"op": "load_audio", "mono": false}]}"#).unwrap();
            let bytes = wav(8000, channels, frames);
            let fixed = Pipeline::new(spec).run(&CpuBackend, &bytes).unwrap();
            let full = Pipeline::new(plain).run(&CpuBackend, &bytes).unwrap();
            (fixed, full)
        };
        let stereo = r#"[{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 6}]"#;
        let (fixed, full) = keep(stereo, 2, 4);
        assert_eq!(fixed.shape, vec![2, 6]);
        let full = full.as_f32().unwrap();
        let want: Vec<f32> = [&full[..4], &[0.0, 0.0], &full[4..], &[0.0, 0.0]].concat();
        assert_eq!(fixed.as_f32().unwrap(), want.as_slice());
        let (fixed, full) = keep(stereo, 2, 9);
        assert_eq!(fixed.shape, vec![2, 6]);
        let full = full.as_f32().unwrap();
        let want: Vec<f32> = [&full[..6], &full[9..15]].concat();
        assert_eq!(fixed.as_f32().unwrap(), want.as_slice());
    }

    #[test]
    fn fix_length_errors_name_the_field_and_the_place() {
        let place = "must come directly after `load_audio`: it cuts or pads the decoded waveform before any \
                     other op";
        let cases = [
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length"}]"#,
                "spec: ops[1] (fix_length) field `size`: is required".to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 0}]"#,
                "spec: ops[1] (fix_length) field `size`: must be a positive integer, got 0".to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 1.5}]"#,
                "spec: ops[1] (fix_length) field `size`: must be a positive integer, got 1.5".to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": "16000"}]"#,
                "spec: ops[1] (fix_length) field `size`: must be a positive integer, got \"16000\""
                    .to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 268435457}]"#,
                "spec: ops[1] (fix_length) field `size`: must be at most 268435456, got 268435457".to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 8, "mode": "edge"}]"#,
                "spec: ops[1] (fix_length) field `mode`: unknown field".to_owned(),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft"}, {"op": "fix_length", "size": 8}]"#,
                format!("spec: ops[2] (fix_length): {place}"),
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "fix_length", "size": 8}, {"op": "fix_length", "size": 8}]"#,
                format!("spec: ops[2] (fix_length): {place}"),
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "fix_length", "size": 8}]"#,
                format!("spec: ops[1] (fix_length): {place}"),
            ),
            (
                r#"[{"op": "fix_length", "size": 8}]"#,
                "spec: ops[0] (fix_length): the first op must be `load_audio` or `decode_image`".to_owned(),
            ),
        ];
        for (ops, expected) in cases {
            assert_eq!(error(ops), expected, "{ops}");
        }
    }

    fn error(ops: &str) -> String {
        Spec::from_json(&format!(r#"{{"ops": {ops}}}"#))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn huge_or_overflowing_values_are_bounded_field_errors() {
        let cases = [
            (
                r#"[{"op": "decode_image"}, {"op": "center_crop", "height": 6148914691236517206, "width": 3}]"#,
                "spec: ops[1] (center_crop) field `height`: must be at most 1048576, got 6148914691236517206",
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "center_crop", "height": 1048576, "width": 1048576}]"#,
                "spec: ops[1] (center_crop) field `width`: 1048576 x 1048576 is 1099511627776 pixels, above \
                 the limit of 268435456",
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "resize", "height": 100000, "width": 100000}]"#,
                "spec: ops[1] (resize) field `width`: 100000 x 100000 is 10000000000 pixels",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "sample_rate": 4294967297}]"#,
                "spec: ops[3] (mel) field `sample_rate`: must be at most 768000, got 4294967297",
            ),
            (
                r#"[{"op": "load_audio", "sample_rate": 800000}]"#,
                "spec: ops[0] (load_audio) field `sample_rate`: must be at most 768000, got 800000",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 1099511627776}]"#,
                "spec: ops[1] (stft) field `n_fft`: must be at most 1048576, got 1099511627776",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "hop_length": 18446744073709551615}]"#,
                "spec: ops[1] (stft) field `hop_length`: must be at most 16777216, got 18446744073709551615",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude"}, {"op": "mel", "n_mels": 100000}]"#,
                "spec: ops[3] (mel) field `n_mels`: must be at most 1024, got 100000",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft", "n_fft": 1e30}]"#,
                "spec: ops[1] (stft) field `n_fft`: must be a positive integer, got 1e+30",
            ),
            (
                r#"[{"op": "load_audio"}, {"op": "stft"}, {"op": "magnitude", "power": 1e300}]"#,
                "spec: ops[2] (magnitude) field `power`: must be > 0 and at most",
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "to_float"}, {"op": "normalize", "mean": [1e300], "std": [1]}]"#,
                "spec: ops[2] (normalize) field `mean`: must contain only numbers that fit a float32",
            ),
            (
                r#"[{"op": "decode_image"}, {"op": "to_float"}, {"op": "normalize", "mean": [0], "std": [1e-300]}]"#,
                "spec: ops[2] (normalize) field `std`: must not contain 0",
            ),
            (
                r#"[{"op": "decode_image", "max_pixels": 0}]"#,
                "spec: ops[0] (decode_image) field `max_pixels`: must be a positive integer or null (no limit), got 0",
            ),
            (
                r#"[{"op": "decode_image", "max_pixels": "lots"}]"#,
                "field `max_pixels`: must be a positive integer or null",
            ),
        ];
        for (ops, expected) in cases {
            let message = error(ops);
            assert!(
                message.contains(expected),
                "{ops}\n  got:      {message}\n  expected: {expected}"
            );
        }
    }

    #[test]
    fn max_pixels_defaults_to_pillows_and_null_means_none() {
        let spec = |ops: &str| Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
        assert_eq!(spec(r#"[{"op": "decode_image"}]"#).max_pixels(), Some(89_478_485));
        assert_eq!(
            spec(r#"[{"op": "decode_image", "max_pixels": null}]"#).max_pixels(),
            None
        );
        assert_eq!(
            spec(r#"[{"op": "decode_image", "max_pixels": 7}]"#).max_pixels(),
            Some(7)
        );
    }

    #[test]
    fn resize_outputs_and_filter_tables_are_bounded_when_planned() {
        use crate::plan::{Plan, PlanKey};
        let plan = |ops: &str, height: usize, width: usize| {
            let spec = Spec::from_json(&format!(r#"{{"ops": {ops}}}"#)).unwrap();
            let dims = ImageDims::decoded(height, width, ImageMode::Rgb);
            Plan::new(&spec, PlanKey::Image(dims))
                .map(|_| ())
                .unwrap_err()
                .to_string()
        };
        let shorter = r#"[{"op": "decode_image"}, {"op": "resize", "shorter_side": 1048576}]"#;
        assert_eq!(
            plan(shorter, 2, 4000),
            "resize: a 4000x2 image would resize to 2097152000x1048576, above the limit of 268435456 pixels"
        );
        let lanczos =
            r#"[{"op": "decode_image"}, {"op": "resize", "height": 1, "width": 224, "filter": "lanczos"}]"#;
        // Pillow's table for 100e6 -> 224 with lanczos: 224 outputs x 2678573 taps.
        assert_eq!(
            plan(lanczos, 1, 100_000_000),
            "resize: resizing a 100000000x1 image to 224x1 needs 600000352 filter coefficients, above the \
             limit of 67108864"
        );
        // A mismatched key is an error, not a panic.
        let spec = Spec::from_json(&format!(r#"{{"ops": {lanczos}}}"#)).unwrap();
        let audio = PlanKey::Audio {
            channels: None,
            sample_rate: 8000,
        };
        assert_eq!(
            Plan::new(&spec, audio).unwrap_err().to_string(),
            "plan: `resize` needs an image, the plan is for audio"
        );
    }
}
