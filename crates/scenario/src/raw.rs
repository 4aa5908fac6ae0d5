//! The file format as serde reads it, with spans on everything validated later.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// An unsigned 64-bit number: a TOML integer (≥ 0), or a string (`"0xffffffffffffffff"`,
/// decimal or `0x` hex, `_` allowed) for the values above `i64::MAX` that TOML integers
/// cannot hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Num(pub u64);

impl Num {
    pub fn parse(s: &str) -> Option<u64> {
        let t: String = s.trim().chars().filter(|&c| c != '_').collect();
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) if !h.is_empty() => u64::from_str_radix(h, 16).ok(),
            Some(_) => None,
            None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
            None => None,
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a non-negative integer, or a string such as \"0xffffffffffffffff\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                u64::try_from(v)
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Num, E> {
                Num::parse(s).map(Num).ok_or_else(|| {
                    E::custom(format!("{s:?} is not a 64-bit number (decimal or 0x hex)"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// Why real KVM cannot run this scenario.
    #[serde(default)]
    pub probe_skip: Option<String>,
    #[serde(default)]
    pub allow_unsafe_mappings: bool,
    #[serde(default, rename = "mapping")]
    pub mappings: Vec<Spanned<RawMapping>>,
    #[serde(default, rename = "memslot")]
    pub memslots: Vec<Spanned<RawMemslot>>,
    #[serde(default, rename = "vcpu")]
    pub vcpus: Vec<RawVcpu>,
    #[serde(default, rename = "nested_map")]
    pub nested: Vec<Spanned<RawNested>>,
    #[serde(default, rename = "host")]
    pub host: Vec<Spanned<RawHost>>,
    #[serde(default)]
    pub expect: BTreeMap<String, RawExpect>,
    #[serde(default)]
    pub check: Option<Spanned<RawCheck>>,
    #[serde(default)]
    pub seen: Vec<Spanned<RawSeen>>,
}

/// `[[seen]]`: what an access (or the userfaultfd handler) must have shown.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSeen {
    #[serde(default)]
    pub access: Option<Spanned<String>>,
    /// What the host reads back through its mapping at the end.
    #[serde(default)]
    pub host: Option<Spanned<RawPeek>>,
    /// What `pread` of the mapping's file returns at the end.
    #[serde(default)]
    pub file: Option<Spanned<RawPeek>>,
    #[serde(default)]
    pub policies: Vec<Spanned<String>>,
    pub is: Spanned<OneOrMany>,
}

/// A host read at the end of a run.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeek {
    pub mapping: Spanned<String>,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub size: Option<u8>,
}

/// One value or a list of alternatives.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    pub preemptions: Spanned<u32>,
    pub why: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub name: Spanned<String>,
    pub backing: Spanned<String>,
    pub pages: Spanned<u64>,
    #[serde(default)]
    pub prot: Option<Spanned<String>>,
    #[serde(default)]
    pub fill: Option<Spanned<Num>>,
    #[serde(default)]
    pub touch: Vec<Spanned<u64>>,
    #[serde(default)]
    pub region_index: Option<Spanned<u64>>,
    #[serde(default)]
    pub fault_retry: bool,
    #[serde(default)]
    pub insert_mixed: bool,
    #[serde(default)]
    pub user_mode_only: bool,
    #[serde(default)]
    pub handler_delay_ms: Option<Spanned<u64>>,
    #[serde(default)]
    pub follows: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemslot {
    pub slot: u32,
    pub gpa: Spanned<u64>,
    pub mapping: Spanned<String>,
    #[serde(default)]
    pub offset: u64,
    pub pages: Spanned<u64>,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVcpu {
    pub program: Vec<Spanned<RawOp>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOp {
    #[serde(default)]
    pub read: Option<Num>,
    #[serde(default)]
    pub write: Option<Num>,
    #[serde(default)]
    pub value: Option<Num>,
    #[serde(default)]
    pub size: Option<u8>,
    /// After EFAULT, the VMM re-runs the access this many times.
    #[serde(default)]
    pub reruns: Option<Spanned<u32>>,
    /// The data the VMM returns when the read exits as MMIO.
    #[serde(default)]
    pub mmio: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNested {
    pub gpa: u64,
    #[serde(default)]
    pub rounds: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHost {
    #[serde(default)]
    pub thread: Option<String>,
    #[serde(default)]
    pub after: Option<Spanned<String>>,
    pub action: Spanned<String>,
    #[serde(default)]
    pub mapping: Option<Spanned<String>>,
    #[serde(default)]
    pub offset: Option<Spanned<u64>>,
    #[serde(default)]
    pub slot: Option<Spanned<u32>>,
    #[serde(default)]
    pub gpa: Option<Spanned<u64>>,
    #[serde(default)]
    pub readonly: Option<Spanned<bool>>,
    #[serde(default)]
    pub race: Option<Spanned<bool>>,
    #[serde(default)]
    pub pages: Option<Spanned<u64>>,
    #[serde(default)]
    pub prot: Option<Spanned<String>>,
    #[serde(default)]
    pub value: Option<Spanned<Num>>,
    #[serde(default)]
    pub size: Option<Spanned<u64>>,
    #[serde(default)]
    pub fill: Option<Spanned<Num>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    #[serde(default)]
    pub violations: Vec<Spanned<String>>,
    #[serde(default)]
    pub outcome: Option<Spanned<String>>,
}
