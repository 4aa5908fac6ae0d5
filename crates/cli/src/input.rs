//! Resolving command-line scenario and policy arguments; bad input is a one-line error and
//! exit status 2.

use model::kvm::PolicyId;
use scenario::Scenario;
use std::path::Path;

/// A scenario with the text it was parsed from.
#[derive(Clone, Debug)]
pub struct Source {
    pub scenario: Scenario,
    pub text: String,
    /// `built-in` or the file's path.
    pub origin: String,
}

/// [`scenarios`], keeping each scenario's text.
pub fn sources(args: &[String]) -> Result<Vec<Source>, String> {
    let builtin_text = |n: &str| {
        scenario::BUILTIN
            .iter()
            .find(|(b, _)| *b == n)
            .map(|(_, t)| t.to_string())
    };
    if args.is_empty() {
        return scenarios(args)?
            .into_iter()
            .map(|sc| {
                Ok(Source {
                    text: builtin_text(&sc.name).expect("built-in"),
                    origin: "built-in".into(),
                    scenario: sc,
                })
            })
            .collect();
    }
    args.iter()
        .map(|a| {
            let sc = scenarios(std::slice::from_ref(a))?.remove(0);
            let (text, origin) = match builtin_text(a) {
                Some(t) => (t, "built-in".to_string()),
                None => (
                    scenario::read(Path::new(a)).map_err(|e| e.render())?,
                    a.clone(),
                ),
            };
            Ok(Source {
                scenario: sc,
                text,
                origin,
            })
        })
        .collect()
}

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
                return scenario::load(p).map_err(|e| e.render());
            }
            let names: Vec<&str> = scenario::BUILTIN.iter().map(|(n, _)| *n).collect();
            Err(format!(
                "{a}: neither a built-in scenario ({}) nor a file",
                names.join(", ")
            ))
        })
        .collect()
}

/// Policy arguments: era and mutant names, `mutants` for every mutant; none means every era
/// (mutants are never in the default matrix).
pub fn policies(args: &[String]) -> Result<Vec<PolicyId>, String> {
    if args.is_empty() {
        return Ok(PolicyId::ALL.to_vec());
    }
    let mut out = Vec::new();
    for a in args {
        let add: Vec<PolicyId> = if a == "mutants" {
            PolicyId::MUTANTS.to_vec()
        } else {
            vec![PolicyId::from_name(a).ok_or_else(|| {
                let names: Vec<&str> = PolicyId::ALL
                    .iter()
                    .chain(PolicyId::MUTANTS.iter())
                    .map(|p| p.name())
                    .collect();
                format!(
                    "--policy {a}: unknown policy; expected one of {}, or mutants",
                    names.join(", ")
                )
            })?]
        };
        for p in add {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}
