//! Admission: decoding reviews, the webhooks' decisions, and JSON patches.
//!
//! Handlers here are functions from a decoded request to a response; the
//! HTTP edge lives in [`crate::server`].

pub mod pod;
pub mod review;

pub use review::{
    AdmissionAnswer, Deadline, ReviewError, admit_within, conversion_timeout, convert_within,
    decode_admission, decode_admission_raw, decode_conversion, review_uid, timeout_denial,
};
