//! The anonymous instance ID: 64 lowercase hex digits from a one-way HMAC-SHA256.
//!
//! Foundation placeholder: HMAC over the machine-id and `Butler.configQRS.host`. The host
//! issue replaces it with the Butler-compatible and container derivations.

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::host::Roots;

/// The ID and how it was made (names and sources of the inputs, never their values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceId {
    pub id: String,
    pub method: String,
    pub inputs: Vec<String>,
}

/// hex(HMAC-SHA256(key, message)).
pub fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// Placeholder derivation (see the module doc).
pub fn derive(roots: &Roots, qrs_host: Option<&str>) -> InstanceId {
    let machine_id = std::fs::read_to_string(roots.etc.join("machine-id")).unwrap_or_default();
    let message = format!("{}{}", machine_id.trim(), qrs_host.unwrap_or(""));
    InstanceId {
        id: hmac_hex(b"butler-agent placeholder", message.as_bytes()),
        method: "placeholder".into(),
        inputs: vec![
            "machine-id from /etc".into(),
            "Butler.configQRS.host".into(),
        ],
    }
}
