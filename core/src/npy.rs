//! NumPy `.npy` (format 1.0) encoding and decoding of [`Tensor`]s, little-endian, C order.

use crate::error::{Error, Result};
use crate::tensor::{Tensor, TensorData};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Encodes a tensor as `.npy` bytes (`|u1`, `<f4` or `<c8`).
pub fn encode(tensor: &Tensor) -> Vec<u8> {
    let descr = match tensor.data {
        TensorData::U8(_) => "|u1",
        TensorData::F32(_) => "<f4",
        TensorData::C64(_) => "<c8",
    };
    let shape = match tensor.shape.as_slice() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so the data starts on a 64-byte boundary, as NumPy does.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(unpadded + 64 + tensor.element_count() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match &tensor.data {
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::F32(v) | TensorData::C64(v) => {
            v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
        }
    }
    out
}

/// Decodes `.npy` bytes of dtype `|u1`/`<u1`, `<f4`, `<f8` (narrowed to f32) or `<c8`.
pub fn decode(bytes: &[u8]) -> Result<Tensor> {
    let bad = |why: &str| Error::decode("NPY", why);
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(&format!("unsupported format version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next());
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad("Fortran-order arrays are not supported"));
    }
    let shape_text = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
        .collect::<Result<Vec<_>>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("shape overflows"))?;
    // The header was read from `bytes`, so `start + header_len` is in range.
    let body = &bytes[start + header_len..];
    let need = |size: usize| match count.checked_mul(size) {
        Some(n) if n <= body.len() => Ok(()),
        _ => Err(bad("data shorter than its shape")),
    };
    let data = match descr {
        Some("|u1" | "<u1") => {
            need(1)?;
            TensorData::U8(body[..count].to_vec())
        }
        Some("<f4") => {
            need(4)?;
            TensorData::F32(
                body.chunks_exact(4)
                    .take(count)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        Some("<f8") => {
            need(8)?;
            TensorData::F32(
                body.chunks_exact(8)
                    .take(count)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                    .collect(),
            )
        }
        Some("<c8") => {
            need(8)?;
            TensorData::C64(
                body.chunks_exact(4)
                    .take(2 * count)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        }
        other => return Err(bad(&format!("unsupported dtype {other:?}"))),
    };
    Ok(Tensor::new(shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for t in [
            Tensor::u8(vec![2, 3], vec![1, 2, 3, 4, 5, 6]),
            Tensor::f32(vec![4], vec![0.5, -1.0, 3.25, 1e-9]),
            Tensor::c64(vec![1, 2], vec![1.0, -1.0, 0.0, 2.0]),
        ] {
            let bytes = encode(&t);
            assert_eq!(
                (bytes.len() - t.element_count() * [1, 4, 8][t.dtype() as usize]) % 64,
                0
            );
            assert_eq!(decode(&bytes).unwrap(), t);
        }
    }

    #[test]
    fn hostile_shapes_are_errors() {
        let npy = |shape: &str, body: usize| {
            let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}\n");
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0u8, body));
            bytes
        };
        let error = decode(&npy("4294967296, 4294967296, 16", 64))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "corrupt or unsupported NPY: shape overflows");
        let error = decode(&npy("4611686018427387904,", 64)).unwrap_err().to_string();
        assert_eq!(error, "corrupt or unsupported NPY: data shorter than its shape");
        assert_eq!(decode(&npy("2, 2", 16)).unwrap().shape, vec![2, 2]);
    }
}
