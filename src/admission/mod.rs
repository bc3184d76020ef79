//! The review plumbing every webhook route shares: decoding an
//! AdmissionReview or ConversionReview into just the fields keyhook reads,
//! the one mapping from a malformed body to an HTTP status, and answering
//! within the request's deadline (a handler that overruns gets a denial that
//! says so).
//!
//! The decisions themselves live with their concern: pods in
//! [`crate::injection`], the custom resources in [`crate::apis`].

pub mod review;

pub use review::{
    AdmissionAnswer, Deadline, ReviewError, admit_within, conversion_timeout, convert_within,
    decode_admission, decode_admission_raw, decode_conversion, decode_naming_path, review_uid,
    timeout_denial,
};
