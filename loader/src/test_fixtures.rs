//! Test helpers for the loader's unit tests.

use crate::trust::TrustPolicy;

/// Trust checks on modes only: files owned by whoever runs the tests pass.
pub(crate) const ANYONE: TrustPolicy = TrustPolicy {
    required_owner: None,
    check_modes: true,
};

pub(crate) use crate::testkit::compile_fixture as compile;
