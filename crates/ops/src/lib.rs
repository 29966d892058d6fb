//! Security operations made executable (SPEC §10): `doctor` audits a deployment against
//! the security guide, `teardown` decommissions a tunnel, `incident` runs the
//! breach-response runbook as a resumable, recorded procedure.

pub mod compose;
pub mod doctor;
pub mod finding;
pub mod incident;
pub mod k8s;
pub mod monitor;
pub mod rotate;
pub mod runbook;
pub mod setup_output;
pub mod stop;
pub mod teardown;
pub mod timefmt;

pub use finding::{Finding, Report, Severity, Status};
