//! Numbers in JSON output written the way people read them.

use serde::{Serialize, Serializer};

/// A number written with exactly `D` decimals (`12.500`), as the command line has
/// always printed it; `null` if it is not finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fixed<const D: usize>(pub f64);

impl<const D: usize> Serialize for Fixed<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if !self.0.is_finite() {
            return s.serialize_none();
        }
        let text = format!("{:.*}", D, self.0);
        serde_json::value::RawValue::from_string(text)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_kept_and_non_finite_is_null() {
        let v = [
            Fixed::<3>(1.5),
            Fixed(0.0),
            Fixed(2.0 / 3.0),
            Fixed(f64::NAN),
        ];
        assert_eq!(
            serde_json::to_string(&v).expect("json"),
            "[1.500,0.000,0.667,null]"
        );
        assert_eq!(
            serde_json::to_string(&Fixed::<1>(1234.56)).expect("json"),
            "1234.6"
        );
    }
}
