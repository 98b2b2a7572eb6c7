//! Writes the demo dataset `scripts/example` converts: a few dozen short WAVs and images in
//! class folders, synthesised (no binaries in git), the same every time.
//!
//!     cargo run --release -p kiln --example demo_data -- out/demo

use std::f32::consts::PI;
use std::path::Path;

/// A tiny deterministic generator (xorshift), so the demo data never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn write_wav(path: &Path, samples: &[f32], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &s in samples {
        writer
            .write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .expect("write sample");
    }
    writer.finalize().expect("finish wav");
}

/// One second at 16 kHz of each class: a tone chord, a chirp, or noise bursts.
fn audio(root: &Path, rng: &mut Rng) {
    let rate = 16_000;
    for class in ["chords", "chirps", "noise"] {
        let dir = root.join("audio").join(class);
        std::fs::create_dir_all(&dir).expect("create audio dir");
        for i in 0..10 {
            let base = 110.0 * (1.0 + 3.0 * rng.next());
            let samples: Vec<f32> = (0..rate)
                .map(|n| {
                    let t = n as f32 / rate as f32;
                    match class {
                        "chords" => {
                            [1.0, 1.25, 1.5]
                                .iter()
                                .map(|r| (2.0 * PI * base * r * t).sin())
                                .sum::<f32>()
                                / 3.0
                        }
                        "chirps" => (2.0 * PI * (base + 2000.0 * t) * t).sin() * 0.8,
                        _ => {
                            (rng.next() * 2.0 - 1.0)
                                * if ((t * 8.0) as u32).is_multiple_of(2) {
                                    0.8
                                } else {
                                    0.1
                                }
                        }
                    }
                })
                .collect();
            write_wav(&dir.join(format!("{class}-{i:02}.wav")), &samples, rate as u32);
        }
    }
}

/// 320x240 images of each class, as PNG and JPEG.
fn images(root: &Path, rng: &mut Rng) {
    let (w, h) = (320u32, 240u32);
    for class in ["circles", "stripes", "gradients"] {
        let dir = root.join("images").join(class);
        std::fs::create_dir_all(&dir).expect("create image dir");
        for i in 0..8 {
            let (a, b, c) = (rng.next(), rng.next(), rng.next());
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
                let v = match class {
                    "circles" => {
                        let d = ((fx - a).powi(2) + (fy - b).powi(2)).sqrt();
                        ((d * (20.0 + 20.0 * c)).sin() * 0.5 + 0.5) * 255.0
                    }
                    "stripes" => (((fx * (4.0 + 12.0 * a) + fy * 6.0 * b) * PI).sin() * 0.5 + 0.5) * 255.0,
                    _ => (fx * a + fy * (1.0 - a)) * 255.0,
                };
                image::Rgb([v as u8, (v * b) as u8, (255.0 - v * c) as u8])
            });
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join(format!("{class}-{i:02}.{ext}")))
                .expect("save image");
        }
    }
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "out/demo".into());
    let root = Path::new(&root);
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    audio(root, &mut rng);
    images(root, &mut rng);
    println!("{}", root.display());
}
