//! Resolving command-line scenario and policy arguments; bad input is a one-line error and
//! exit status 2.

use model::kvm::PolicyId;
use scenario::Scenario;
use std::path::Path;

/// A scenario argument is a built-in name or a path to a `.toml` file.
pub fn scenarios(args: &[String]) -> Result<Vec<Scenario>, String> {
    if args.is_empty() {
        return scenario::BUILTIN
            .iter()
            .map(|(n, _)| {
                scenario::builtin(n)
                    .expect("listed")
                    .map_err(|e| e.to_string())
            })
            .collect();
    }
    args.iter()
        .map(|a| {
            if let Some(r) = scenario::builtin(a) {
                return r.map_err(|e| e.to_string());
            }
            let p = Path::new(a);
            if p.exists() {
                return scenario::load(p).map_err(|e| e.to_string());
            }
            let names: Vec<&str> = scenario::BUILTIN.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "{a}: neither a built-in scenario ({}) nor a file",
                names.join(", ")
            ))
        })
        .collect()
}

pub fn policies(args: &[String]) -> Result<Vec<PolicyId>, String> {
    if args.is_empty() {
        return Ok(PolicyId::ALL.to_vec());
    }
    args.iter()
        .map(|a| {
            PolicyId::from_name(a).ok_or_else(|| {
                let names: Vec<&str> = PolicyId::ALL.iter().map(|p| p.name()).collect();
                format!(
                    "--policy {a}: unknown policy; expected one of {}",
                    names.join(", ")
                )
            })
        })
        .collect()
}
