//! What a run computes, as data: a config's *result view* is its serialised form with the fields
//! that cannot change the result removed (where it writes, how often it checkpoints) and the ones
//! the run does not read reduced away (the batch setting of the other task, the device's ordinal:
//! `DeviceSpec::kind`).
//! A grid step's key hashes that view with its parents' keys, so no field is left out by hand;
//! resuming compares the same views.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `c` serialised, without the top-level fields named in `drop`.
pub fn view_without<T: Serialize>(c: &T, drop: &[&str]) -> serde_json::Result<Value> {
    let mut v = serde_json::to_value(c)?;
    if let Value::Object(m) = &mut v {
        for f in drop {
            m.remove(*f);
        }
    }
    Ok(v)
}

/// The first 8 bytes of SHA-256 of the value's canonical JSON (object keys sorted), in hex.
pub fn key_hash(v: &Value) -> String {
    let d = Sha256::digest(v.to_string().as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Leaves of a JSON value by dotted path (`train.schedule.base_lr` → `0.00035`).
pub fn flatten_json(v: &Value) -> BTreeMap<String, String> {
    fn go(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    go(&key, x, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    go("", v, &mut out);
    out
}

/// `path: old -> new` for every leaf that differs between two views.
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let (a, b) = (flatten_json(old), flatten_json(new));
    let none = "(unset)".to_string();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            format!(
                "{k}: {} -> {}",
                a.get(k).unwrap_or(&none),
                b.get(k).unwrap_or(&none)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_object_key_order_and_sees_every_leaf() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": {"c": [1, 2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b": {"c": [1, 2]}, "a": 1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b": {"c": [1, 3]}, "a": 1}"#).unwrap();
        assert_eq!(key_hash(&a), key_hash(&b));
        assert_ne!(key_hash(&a), key_hash(&c));
        assert_eq!(changed_fields(&a, &c), vec!["b.c: [1,2] -> [1,3]"]);
    }
}
