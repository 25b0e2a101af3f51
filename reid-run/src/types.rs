//! Typed config values that users write as strings (`input = "256x128"`, `batch_pk = "16x4"`):
//! parsed once where they enter (TOML, CLI), written back as the same strings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Split `AxB` into two integers ≥ 1.
fn two_counts(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.trim().split_once(['x', 'X'])?;
    let a: usize = a.trim().parse().ok()?;
    let b: usize = b.trim().parse().ok()?;
    (a >= 1 && b >= 1).then_some((a, b))
}

/// A network input size, `HEIGHTxWIDTH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InputSize {
    pub height: usize,
    pub width: usize,
}

impl InputSize {
    pub const fn new(height: usize, width: usize) -> Self {
        Self { height, width }
    }
    /// `(height, width)`.
    pub fn hw(&self) -> (usize, usize) {
        (self.height, self.width)
    }
}

/// Longest image side (re-ID inputs are 256x128 or 384x192; 8192x8192 allocated until the
/// allocator aborted).
const MAX_SIDE: usize = 2048;

impl InputSize {
    /// The rules a parsed size obeys, for sizes built in code.
    pub fn validate(&self) -> Result<(), String> {
        let side = 1..=MAX_SIDE;
        if side.contains(&self.height) && side.contains(&self.width) {
            Ok(())
        } else {
            Err(format!(
                "input size '{self}': expected HEIGHTxWIDTH with sides in 1..={MAX_SIDE}, e.g. 256x128"
            ))
        }
    }
}

impl FromStr for InputSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = two_counts(s).map(|(h, w)| Self::new(h, w)).ok_or_else(|| {
            format!("input size '{s}': expected HEIGHTxWIDTH with sides in 1..={MAX_SIDE}, e.g. 256x128")
        })?;
        v.validate()?;
        Ok(v)
    }
}

impl fmt::Display for InputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

impl TryFrom<String> for InputSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<InputSize> for String {
    fn from(v: InputSize) -> String {
        v.to_string()
    }
}

/// A re-ID batch of P identities × K images each, `PxK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PkBatch {
    pub p: usize,
    pub k: usize,
}

impl PkBatch {
    pub const fn new(p: usize, k: usize) -> Self {
        Self { p, k }
    }
    /// Images a batch.
    pub fn size(&self) -> usize {
        self.p * self.k
    }
}

impl PkBatch {
    /// The rules a parsed batch obeys, for batches built in code.
    pub fn validate(&self) -> Result<(), String> {
        if self.p >= 1 && self.k >= 1 {
            Ok(())
        } else {
            Err(format!(
                "batch '{self}': expected PxK with P, K ≥ 1 identities × images, e.g. 16x4"
            ))
        }
    }
}

impl FromStr for PkBatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        two_counts(s).map(|(p, k)| Self::new(p, k)).ok_or_else(|| {
            format!("batch '{s}': expected PxK with P, K ≥ 1 identities × images, e.g. 16x4")
        })
    }
}

impl fmt::Display for PkBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.p, self.k)
    }
}

impl TryFrom<String> for PkBatch {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PkBatch> for String {
    fn from(v: PkBatch) -> String {
        v.to_string()
    }
}

/// Where a run computes: `cpu`, `cuda` (= `cuda:0`) or `cuda:N`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// `cpu` or `cuda`: results depend on the kind of device (its kernels round differently),
    /// not on which of several equal GPUs ran them.
    pub fn kind(&self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "cpu",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        t.strip_prefix("cuda:")
            .or_else(|| (t == "cuda").then_some("0"))
            .and_then(|o| o.parse::<usize>().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| format!("device '{s}': expected cpu, cuda or cuda:N"))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(v: DeviceSpec) -> String {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names_parse_with_their_aliases_once() {
        for (given, canonical) in [
            ("Market-1501", "market1501"),
            ("duke", "dukemtmc-reid"),
            ("cuhk03-np", "cuhk03-np-labeled"),
            ("CUHK03-NP-DETECTED", "cuhk03-np-detected"),
            ("imagefolder", "imagefolder"),
        ] {
            assert_eq!(given.parse::<DatasetName>().unwrap().canonical(), canonical);
        }
        let e = "marked".parse::<DatasetName>().unwrap_err();
        assert!(
            e.starts_with("unknown dataset 'marked': expected one of market1501, dukemtmc-reid"),
            "{e}"
        );
        assert_eq!(
            "cuhk03-np-detected"
                .parse::<DatasetName>()
                .unwrap()
                .in_paper(),
            Some("cuhk03-np")
        );
        assert_eq!("msmt17".parse::<DatasetName>().unwrap().in_paper(), None);
    }

    #[test]
    fn parse_print_and_refuse() {
        let i: InputSize = " 256 X 128".parse().unwrap();
        assert_eq!((i.hw(), i.to_string()), ((256, 128), "256x128".to_string()));
        let p: PkBatch = "16x4".parse().unwrap();
        assert_eq!((p.size(), p.to_string()), (64, "16x4".to_string()));
        for bad in ["", "256", "0x128", "256x", "x", "-1x2", "1.5x2", "99999x2"] {
            assert!(bad.parse::<InputSize>().is_err(), "{bad}");
        }
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!(
            "cuda:3".parse::<DeviceSpec>().unwrap().to_string(),
            "cuda:3"
        );
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap().kind(), "cpu");
        for bad in ["gpu0", "cuda:", "cuda:-1", ""] {
            assert!(
                bad.parse::<DeviceSpec>()
                    .unwrap_err()
                    .contains("expected cpu"),
                "{bad}"
            );
        }
        for bad in ["4x0", "4", "ax4"] {
            let e = bad.parse::<PkBatch>().unwrap_err();
            assert!(e.contains(bad) && e.contains("PxK"), "{e}");
        }
        // as TOML strings, both ways, with the error naming the value
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        struct C {
            input: InputSize,
            batch_pk: PkBatch,
        }
        let c: C = toml::from_str("input = \"64x32\"\nbatch_pk = \"8x4\"\n").unwrap();
        assert_eq!(
            toml::to_string(&c).unwrap(),
            "input = \"64x32\"\nbatch_pk = \"8x4\"\n"
        );
        let e = toml::from_str::<C>("input = \"64y32\"\nbatch_pk = \"8x4\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("64y32") && e.contains("input"), "{e}");
    }
}

/// The paper's scenarios (Fig. 3): where pruning happens relative to the domain transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scenario {
    /// Prune on the source, then fine-tune on the target.
    S1,
    /// Half the reduction on the source, fine-tune, the other half on the target.
    S2,
    /// Fine-tune, then prune on the target.
    S3,
    /// Prune the source model on the target (retraining there), without fine-tuning first.
    S4,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S4];
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;

    /// A grid cell's `scenario` (`S1`…`S4`); the other rows of a grid (baseline, source,
    /// scratch) and single runs are no scenario.
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("'{s}' is not a scenario: expected one of S1, S2, S3, S4"))
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dataset the loaders read, by the canonical name records and reports use. The names users
/// write (aliases included, any case) are parsed once where they enter; nothing else tests a
/// dataset name's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetName {
    Market1501,
    DukeMtmcReid,
    Cuhk03NpLabeled,
    Cuhk03NpDetected,
    Msmt17,
    ImageFolder,
}

impl DatasetName {
    pub const ALL: [DatasetName; 6] = [
        Self::Market1501,
        Self::DukeMtmcReid,
        Self::Cuhk03NpLabeled,
        Self::Cuhk03NpDetected,
        Self::Msmt17,
        Self::ImageFolder,
    ];

    /// The name records and reports use.
    pub fn canonical(self) -> &'static str {
        match self {
            Self::Market1501 => "market1501",
            Self::DukeMtmcReid => "dukemtmc-reid",
            Self::Cuhk03NpLabeled => "cuhk03-np-labeled",
            Self::Cuhk03NpDetected => "cuhk03-np-detected",
            Self::Msmt17 => "msmt17",
            Self::ImageFolder => "imagefolder",
        }
    }

    /// Other names accepted for it.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Self::Market1501 => &["market-1501", "market"],
            Self::DukeMtmcReid => &["dukemtmcreid", "duke"],
            Self::Cuhk03NpLabeled => &["cuhk03-np", "cuhk03np"],
            _ => &[],
        }
    }

    /// One line on its layout.
    pub fn about(self) -> &'static str {
        match self {
            Self::Market1501 => {
                "Market-1501: bounding_box_train, query, bounding_box_test; 6 cameras"
            }
            Self::DukeMtmcReid => "DukeMTMC-reID: same layout as Market-1501; 8 cameras",
            Self::Cuhk03NpLabeled => {
                "CUHK03 new protocol, labeled/{bounding_box_train,query,bounding_box_test} \
                 (also `cuhk03-np`)"
            }
            Self::Cuhk03NpDetected => {
                "CUHK03 new protocol, detected/{bounding_box_train,query,bounding_box_test}"
            }
            Self::Msmt17 => {
                "MSMT17 v1 (train/, test/) or v2 (mask_train_v2/, mask_test_v2/) with list_*.txt"
            }
            Self::ImageFolder => {
                "one folder per class (training only): a pre-training / source set"
            }
        }
    }

    /// The dataset of the paper's tables it is (both CUHK03-NP variants are its `cuhk03-np`).
    pub fn in_paper(self) -> Option<&'static str> {
        match self {
            Self::Market1501 => Some("market1501"),
            Self::DukeMtmcReid => Some("dukemtmc-reid"),
            Self::Cuhk03NpLabeled | Self::Cuhk03NpDetected => Some("cuhk03-np"),
            Self::Msmt17 | Self::ImageFolder => None,
        }
    }
}

impl FromStr for DatasetName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|d| d.canonical() == lower || d.aliases().contains(&lower.as_str()))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|d| d.canonical()).collect();
                format!(
                    "unknown dataset '{s}': expected one of {} (or an alias: market, duke, \
                     cuhk03-np)",
                    names.join(", ")
                )
            })
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.canonical())
    }
}
