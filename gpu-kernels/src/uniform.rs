//! Typed uniform blocks: one `#[repr(C)]` Pod struct per shader, field for field as the shader's
//! `var<uniform>` struct, so a kernel fills named fields rather than positional words. The
//! tests below compare every struct with the layout naga computes from the WGSL (names, types,
//! offsets, size), so the two cannot drift apart.

use crate::{BackendError, Result};

/// A uniform block mirroring the `var<uniform>` struct of one WGSL module.
pub(crate) trait Uniform: bytemuck::Pod {
    /// The module (as compiled, fragments included) whose uniform struct this mirrors.
    #[cfg_attr(not(test), allow(dead_code))]
    const WGSL: &'static str;
    /// `(name, WGSL scalar type, byte offset)` of each field, in order.
    #[cfg_attr(not(test), allow(dead_code))]
    const FIELDS: &'static [(&'static str, &'static str, usize)];
}

/// Declares a uniform struct and its [`Uniform`] impl from one field list.
macro_rules! uniform {
    ($(#[$meta:meta])* $name:ident for $wgsl:path {
        $($field:ident: $ty:ident),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $(pub $field: $ty),*
        }

        impl $crate::uniform::Uniform for $name {
            const WGSL: &'static str = $wgsl;
            const FIELDS: &'static [(&'static str, &'static str, usize)] = &[
                $((stringify!($field), stringify!($ty), std::mem::offset_of!($name, $field))),*
            ];
        }
    };
}
pub(crate) use uniform;

/// `value` as a shader's 32-bit field, or an error naming the op and field: a value that does
/// not fit would otherwise be truncated silently.
pub(crate) fn field<T: TryFrom<V>, V: Copy + std::fmt::Display>(
    op: &'static str,
    name: &'static str,
    value: V,
) -> Result<T> {
    T::try_from(value).map_err(|_| BackendError::FieldOverflow {
        op,
        field: name,
        value: value.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::Uniform;
    use crate::{audio::params as audio, image::params as image};

    /// One uniform type's layout, as the Rust struct has it.
    struct RustLayout {
        wgsl: &'static str,
        type_name: &'static str,
        size: usize,
        fields: &'static [(&'static str, &'static str, usize)],
    }

    fn layout<T: Uniform>() -> RustLayout {
        RustLayout {
            wgsl: T::WGSL,
            type_name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
            fields: T::FIELDS,
        }
    }

    fn all() -> Vec<RustLayout> {
        vec![
            layout::<audio::Stft>(),
            layout::<audio::Fft>(),
            layout::<audio::Magnitude>(),
            layout::<audio::Mel>(),
            layout::<audio::Db>(),
            layout::<audio::Dct>(),
            layout::<image::Resize>(),
            layout::<image::Pixels>(),
        ]
    }

    /// `(name, type, offset)` of each member and the struct's size, as naga lays out the
    /// module's `var<uniform>` struct; `None` when the module has no uniform.
    type Fields = Vec<(String, String, usize)>;

    fn wgsl_layout(source: &str) -> Option<(Fields, usize)> {
        let module = naga::front::wgsl::parse_str(source).expect("WGSL parses");
        let mut uniforms = module
            .global_variables
            .iter()
            .filter(|(_, var)| var.space == naga::AddressSpace::Uniform);
        let (_, var) = uniforms.next()?;
        assert!(uniforms.next().is_none(), "one uniform per module");
        let naga::TypeInner::Struct { members, span } = &module.types[var.ty].inner else {
            panic!("the uniform is a struct");
        };
        let fields = members
            .iter()
            .map(|m| {
                let ty = match module.types[m.ty].inner {
                    naga::TypeInner::Scalar(s) => match (s.kind, s.width) {
                        (naga::ScalarKind::Uint, 4) => "u32",
                        (naga::ScalarKind::Sint, 4) => "i32",
                        (naga::ScalarKind::Float, 4) => "f32",
                        other => panic!("unexpected scalar {other:?}"),
                    },
                    ref other => panic!("uniform members are 4-byte scalars, got {other:?}"),
                };
                (
                    m.name.clone().unwrap_or_default(),
                    ty.to_owned(),
                    m.offset as usize,
                )
            })
            .collect();
        Some((fields, *span as usize))
    }

    #[test]
    fn every_uniform_struct_matches_its_wgsl_layout() {
        let all = all();
        for (name, source) in crate::SHADERS {
            let ours: Vec<&RustLayout> = all.iter().filter(|l| l.wgsl == *source).collect();
            match wgsl_layout(source) {
                None => assert!(ours.is_empty(), "{name} has no uniform"),
                Some((fields, span)) => {
                    let [ours] = ours.as_slice() else {
                        panic!("{name}: expected one Rust uniform struct, found {}", ours.len());
                    };
                    let rust: Fields = ours
                        .fields
                        .iter()
                        .map(|&(n, t, o)| (n.to_owned(), t.to_owned(), o))
                        .collect();
                    assert_eq!(rust, fields, "{name}: {} fields", ours.type_name);
                    assert_eq!(ours.size, span, "{name}: size of {}", ours.type_name);
                }
            }
        }
        // Every Rust struct belongs to a listed module.
        for l in &all {
            assert!(
                crate::SHADERS.iter().any(|(_, s)| *s == l.wgsl),
                "{} mirrors no module in SHADERS",
                l.type_name
            );
        }
    }

    #[test]
    fn oversized_field_is_an_error_not_a_truncation() {
        let err = super::field::<u32, _>("stft", "n_frames", 1usize << 33).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stft: n_frames = 8589934592 does not fit the shader's 32-bit field"
        );
        let err = super::field::<i32, _>("center_crop", "top", -(1isize << 40)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "center_crop: top = -1099511627776 does not fit the shader's 32-bit field"
        );
    }
}
