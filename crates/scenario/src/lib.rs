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
pub use validate::{ACTIONS, ORACLES, OUTCOMES, POLICIES};

pub use builtin::{builtin, BUILTIN};
pub use error::ScenarioError;
pub use types::*;

/// Parse and validate a scenario from TOML text. `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let raw: raw::RawScenario =
        toml::from_str(text).map_err(|e| ScenarioError::from_toml(file, text, &e))?;
    validate::validate(file, text, raw)
}

/// The largest scenario file read (the built-ins are under 4 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Read a scenario file's text: at most [`MAX_FILE_BYTES`] (a device such as `/dev/zero`
/// must not eat the machine), valid UTF-8 (else the line and column of the first bad byte).
pub fn read(path: &std::path::Path) -> Result<String, ScenarioError> {
    use std::io::Read;
    let file = path.display().to_string();
    let err = |line, column, message: String| ScenarioError {
        file: file.clone(),
        line,
        column,
        message,
        source: None,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| err(0, 0, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(
            0,
            0,
            format!(
                "larger than {} bytes, the most a scenario file may have",
                MAX_FILE_BYTES
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        // The lossy text shows the place: the valid prefix is unchanged, then U+FFFD.
        let shown = String::from_utf8_lossy(e.as_bytes()).into_owned();
        let good = &e.as_bytes()[..valid];
        let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
        let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = 1 + String::from_utf8_lossy(&good[start..]).chars().count();
        let mut e = err(
            line,
            column,
            "not UTF-8: a scenario file is UTF-8 text; this byte starts no valid character".into(),
        );
        e.source = Some((shown, valid..valid + '\u{FFFD}'.len_utf8()));
        e
    })
}

/// Read and parse a scenario file.
pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
    let text = read(path)?;
    parse(&path.display().to_string(), &text)
}
