//! kiln's JPEG decoder on damaged copies of every reference JPEG (the public set's, and in CI
//! the generated baseline, progressive, restart-marker, CMYK and odd-sampling variants):
//! every truncation is an error naming the file's format, and seeded byte corruption either
//! decodes at the declared size or fails with a JPEG error; nothing panics or hangs.

use kiln_core::image::decode::decode_image;
use kiln_core::image::jpeg;

use crate::refdata::set_dirs;

fn reference_jpegs() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in set_dirs() {
        let Ok(entries) = std::fs::read_dir(dir.join("inputs")) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "jpg") {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no reference JPEGs found");
    files
}

/// xorshift64*, so the corruptions are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn every_truncation_is_an_error() {
    for (name, bytes) in reference_jpegs() {
        // The start of the last scan: any cut after it loses entropy data.
        let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]).expect("a scan");
        let mut cuts: Vec<usize> = (0..bytes.len() - 2).step_by((bytes.len() / 60).max(1)).collect();
        cuts.extend(last_sos..(last_sos + 40).min(bytes.len() - 2));
        cuts.extend(bytes.len().saturating_sub(40)..bytes.len() - 2);
        for cut in cuts {
            let message = match decode_image(&bytes[..cut], None) {
                Err(e) => e.to_string(),
                // A sequential file cut exactly after its data, before EOI, is complete.
                Ok(_) if cut == bytes.len() - 2 => continue,
                Ok(image) => panic!(
                    "{name} cut at {cut}/{}: decoded {}x{}",
                    bytes.len(),
                    image.width,
                    image.height
                ),
            };
            assert!(
                message.contains("JPEG") || message.contains("not a PNG, JPEG"),
                "{name} cut at {cut}: {message}"
            );
            if cut > last_sos + 12 {
                assert!(
                    message.contains("image file is truncated"),
                    "{name} cut at {cut}: {message}"
                );
            }
        }
    }
}

#[test]
fn corrupted_bytes_decode_or_fail_cleanly() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, bytes) in reference_jpegs() {
        // Small files get many variants; the public set's 640x480 image a few.
        let variants = if bytes.len() > 20_000 { 12 } else { 60 };
        for variant in 0..variants {
            let mut damaged = bytes.clone();
            for _ in 0..1 + rng.next() % 6 {
                let at = 2 + (rng.next() as usize) % (damaged.len() - 2);
                damaged[at] = rng.next() as u8;
            }
            match jpeg::decode(&damaged) {
                Ok((_, width, height, pixels)) => {
                    assert_eq!(
                        (width, height),
                        jpeg::dimensions(&damaged)
                            .map(|(w, h)| (w as usize, h as usize))
                            .unwrap(),
                        "{name} variant {variant}"
                    );
                    assert!(pixels.len() == width * height || pixels.len() == width * height * 3);
                }
                Err(e) => assert!(e.to_string().contains("JPEG"), "{name} variant {variant}: {e}"),
            }
        }
    }
}
