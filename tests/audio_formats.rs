//! FLAC, MP3 and Ogg Vorbis through `load_audio` beyond the reference cases: every stage after
//! decoding (mono, resampling, `fix_length`), and the errors a user sees for cut, corrupt and
//! unsupported files.
//!
//! The files are the generated reference set's (soundfile writes them: `tests/refgen/
//! audio_formats.py`), found through `KILN_REFDATA` as `refdata` finds its cases; `scripts/test`
//! always generates it. Without `KILN_REFDATA` these tests say so and check nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln_core::audio::decode::{decode_audio, resample};
use kiln_core::{Backend, Pipeline, Spec};
use serde_json::{json, Value};

use crate::for_each_backend;

/// The generated set's directory of inputs, or `None` (after saying why) when no set is named.
fn inputs() -> Option<PathBuf> {
    if std::env::var_os("KILN_REFDATA").is_none() {
        eprintln!("KILN_REFDATA is not set: no generated reference set, so no compressed audio to test");
        return None;
    }
    let found = crate::refdata::set_dirs()
        .into_iter()
        .map(|d| d.join("inputs"))
        .find(|d| d.join("g_flac16_16k_mono.flac").is_file());
    assert!(
        found.is_some(),
        "no set in KILN_REFDATA has the audio_formats inputs: run tests/refgen/make_refdata.py"
    );
    found
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn run(backend: &dyn Backend, spec: Value, bytes: &[u8]) -> kiln_core::Result<kiln_core::Tensor> {
    Pipeline::new(Spec::from_value(&spec).expect("valid spec")).run(backend, bytes)
}

const FILES: [&str; 3] = [
    "g_flac24_44k_stereo.flac",
    "g_mp3_44k_stereo.mp3",
    "g_vorbis_44k_stereo.ogg",
];

/// Mono, resampling and `fix_length` run on decoded FLAC, MP3 and Vorbis exactly as on WAV: the
/// pipeline's output equals the same steps applied to `decode_audio`'s channels.
fn stages_after_decoding(backend: &dyn Backend) {
    let Some(dir) = inputs() else { return };
    for name in FILES {
        let bytes = read(&dir, name);
        let audio = decode_audio(&bytes).unwrap();
        assert_eq!((audio.sample_rate, audio.channels.len()), (44_100, 2), "{name}");
        let spec =
            json!({"ops": [{"op": "load_audio", "sample_rate": 16000}, {"op": "fix_length", "size": 8000}]});
        let got = run(backend, spec, &bytes).unwrap();
        let mut want = resample(&[audio.to_mono()], 44_100, 16_000).unwrap().remove(0);
        want.resize(8000, 0.0);
        assert_eq!(got.shape, vec![8000], "{name}");
        assert_eq!(got.as_f32().unwrap(), want.as_slice(), "{name}");

        let spec = json!({"ops": [{"op": "load_audio", "mono": false}, {"op": "fix_length", "size": 5}]});
        let got = run(backend, spec, &bytes).unwrap();
        let first: Vec<f32> = audio.channels.iter().flat_map(|c| c[..5].to_vec()).collect();
        assert_eq!(got.shape, vec![2, 5], "{name}");
        assert_eq!(got.as_f32().unwrap(), first.as_slice(), "{name}");
    }
}

for_each_backend!(stages_after_decoding);

/// What a user sees for a file cut short, one with corrupt bytes, and formats kiln does not read.
fn damaged_files_name_the_format_and_problem(backend: &dyn Backend) {
    let Some(dir) = inputs() else { return };
    let spec = json!({"ops": [{"op": "load_audio"}, {"op": "stft", "n_fft": 256}, {"op": "magnitude"}]});
    let error = |bytes: &[u8]| {
        let start = Instant::now();
        let message = run(backend, spec.clone(), bytes)
            .expect_err("input should be rejected")
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(2), "{message}");
        message
    };

    // FLAC and Vorbis cut mid-stream end inside a frame or page; MP3 has no end marker, so its
    // Xing/Info frame count tells (17777 frames were encoded).
    let flac = read(&dir, "g_flac24_44k_stereo.flac");
    let message = error(&flac[..flac.len() / 2]);
    assert!(
        message.starts_with("corrupt or unsupported FLAC: after sample ")
            && message.ends_with(": truncated or corrupt: the data ends inside a frame or page"),
        "{message}"
    );
    let mp3 = read(&dir, "g_mp3_44k_stereo.mp3");
    let message = error(&mp3[..mp3.len() / 2]);
    assert!(
        message.starts_with(
            "corrupt or unsupported MP3: truncated or corrupt: the header declares 17777 samples per \
             channel, the frames hold "
        ),
        "{message}"
    );
    let ogg = read(&dir, "g_vorbis_44k_stereo.ogg");
    let message = error(&ogg[..ogg.len() * 3 / 4]);
    assert!(
        // The reader looks for the last page while opening the file, so the cut shows there.
        message
            == "corrupt or unsupported Ogg Vorbis: cannot read the header: truncated or corrupt: the data \
                ends inside a frame or page",
        "{message}"
    );
    // Cut inside the headers.
    assert_eq!(
        error(&flac[..30]),
        "corrupt or unsupported FLAC: cannot read the header: truncated or corrupt: the data ends inside \
         a frame or page"
    );
    assert_eq!(
        error(&ogg[..20]),
        "corrupt or unsupported Ogg: truncated: the file ends inside the first page header"
    );

    // A flipped byte in an Ogg page fails its CRC.
    let mut bad = ogg.clone();
    bad[ogg.len() / 2] ^= 0x40;
    assert_eq!(
        error(&bad),
        "corrupt or unsupported Ogg Vorbis: cannot read the header: malformed stream: ogg: crc mismatch"
    );
    // MP3 frames carry no checksum: damaged main data decodes (as mpg123 decodes it) or fails
    // in the decoder, never panics.
    for at in (400..mp3.len()).step_by(97) {
        let mut bad = mp3.clone();
        bad[at] ^= 0xA5;
        if let Err(e) = run(backend, spec.clone(), &bad) {
            assert!(e.to_string().starts_with("corrupt or unsupported MP3: "), "{e}");
        }
    }

    // Ogg Opus: no pure-Rust decoder kiln uses yet.
    assert_eq!(
        error(&read(&dir, "g_opus_48k_mono.opus")),
        "corrupt or unsupported Ogg: the first stream is Opus; kiln reads Vorbis in Ogg"
    );
    // An ID3v2 tag before the frames (as taggers write) and an ID3v1 tag after them change
    // nothing.
    let mut tagged = b"ID3\x04\0\0\0\0\0\x0aTIT2 title".to_vec();
    tagged.extend_from_slice(&mp3);
    let mut id3v1 = b"TAGsome title".to_vec();
    id3v1.resize(128, 0);
    tagged.extend_from_slice(&id3v1);
    assert!(
        decode_audio(&tagged).unwrap() == decode_audio(&mp3).unwrap(),
        "ID3 tags changed the decoded MP3"
    );
}

for_each_backend!(damaged_files_name_the_format_and_problem);

/// Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, over the page with the
/// checksum field zeroed), rewritten on every whole page so that changed bytes get past the
/// demuxer to the Vorbis headers and packets.
fn fix_ogg_checksums(bytes: &mut [u8]) {
    let crc = |data: &[u8]| {
        data.iter().fold(0u32, |mut c, &b| {
            c ^= u32::from(b) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04C1_1DB7
                } else {
                    c << 1
                };
            }
            c
        })
    };
    let mut at = 0;
    while bytes.len() >= at + 27 && bytes[at..].starts_with(b"OggS") {
        let segments = usize::from(bytes[at + 26]);
        let Some(table) = bytes.get(at + 27..at + 27 + segments) else {
            return;
        };
        let end = at + 27 + segments + table.iter().map(|&s| usize::from(s)).sum::<usize>();
        if end > bytes.len() {
            return;
        }
        bytes[at + 22..at + 26].fill(0);
        let sum = crc(&bytes[at..end]);
        bytes[at + 22..at + 26].copy_from_slice(&sum.to_le_bytes());
        at = end;
    }
}

/// Bytes changed behind valid page checksums reach the Vorbis decoder itself: each such file
/// decodes or fails with kiln's decode error, and none escapes as a panic (symphonia's
/// setup-header parser asserts on some hostile codebooks; kiln makes that the file's error).
#[test]
fn corrupt_vorbis_behind_valid_checksums_is_an_error_not_a_panic() {
    let Some(dir) = inputs() else { return };
    let ogg = read(&dir, "g_vorbis_16k_mono.ogg");
    let mut unchanged = ogg.clone();
    fix_ogg_checksums(&mut unchanged);
    assert_eq!(unchanged, ogg, "the checksum is Ogg's");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut decoded, mut refused) = (0, 0);
    for round in 0..600 {
        let mut bad = ogg.clone();
        for _ in 0..1 + round % 4 {
            // Mostly the headers (the setup header's codebooks are in the first 4 KB).
            let at = next() as usize % if round % 4 == 0 { bad.len() } else { 4000 };
            bad[at] = next() as u8;
        }
        fix_ogg_checksums(&mut bad);
        match decode_audio(&bad) {
            Ok(_) => decoded += 1,
            Err(e) => {
                let message = e.to_string();
                // "Ogg Vorbis" or "Ogg" (a changed codec magic), or "audio" (a changed "OggS").
                assert!(message.starts_with("corrupt or unsupported "), "{message}");
                refused += 1;
            }
        }
    }
    // Both outcomes occur, so the changes reached past the checksums.
    assert!(decoded > 0 && refused > 0, "{decoded} decoded, {refused} refused");
}
