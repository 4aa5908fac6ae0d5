//! kvmmu scenario files: host mappings, memslots, guest programs, host actions and expected
//! outcomes, as TOML. One format serves the model (`kvmmu run`) and real KVM (`kvmmu probe`):
//! backings are named by what they are, guest programs are loads and stores of
//! guest-physical addresses, host actions are the syscalls (or device operations) they are.
//!
//! Every error names the file, line and column and says what is wrong; nothing here panics
//! on bad input.
#![forbid(unsafe_code)]

mod builtin;
mod error;
mod raw;
mod types;
mod validate;
pub use validate::{ORACLES, OUTCOMES, POLICIES};

pub use builtin::{builtin, BUILTIN};
pub use error::ScenarioError;
pub use types::*;

/// Parse and validate a scenario from TOML text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: raw::RawScenario =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    validate::validate(file, text, raw)
}

/// Read and parse a scenario file.
pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        file: file.clone(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    })?;
    parse(&file, &text)
}
