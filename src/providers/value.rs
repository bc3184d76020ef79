//! Secret values: bytes that never print and are wiped when dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// One secret value as a backend returned it.
///
/// `Debug` prints `[redacted]`; the bytes are zeroized when the last clone is
/// dropped. Clones share one allocation (coalesced callers and the result
/// cache hand out the same value without copying it).
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    /// Wraps bytes; the caller's buffer is moved, not copied.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    /// The raw bytes. Keep the borrow short and never log it.
    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// Number of bytes, for memory accounting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretValue {
    fn from(s: String) -> Self {
        Self::new(s.into_bytes())
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// All properties of one key, by property name. Names are not secret; values are.
pub type SecretMap = BTreeMap<String, SecretValue>;

/// What a fetch returns: one value or a map. Cached and coalesced as one unit.
#[derive(Clone, Debug)]
pub(crate) enum Fetched {
    One(SecretValue),
    Map(Arc<SecretMap>),
}

impl Fetched {
    /// Approximate bytes held, for the memory-bounded result cache.
    pub(crate) fn weight(&self) -> u32 {
        let bytes = match self {
            Fetched::One(v) => v.len(),
            Fetched::Map(m) => m.iter().map(|(k, v)| k.len() + v.len() + 32).sum(),
        };
        u32::try_from(bytes.saturating_add(64)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let v = SecretValue::from("hunter2");
        assert_eq!(format!("{v:?}"), "[redacted]");
        let mut m = SecretMap::new();
        m.insert("password".into(), v.clone());
        let printed = format!("{m:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(v.expose(), b"hunter2");
    }
}
