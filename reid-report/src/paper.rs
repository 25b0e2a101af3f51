//! The paper's published numbers (Tables 5–9), shipped in `data/paper_results.csv`, as a
//! reference column where a run's dataset is one of the paper's.

/// One published cell: percentages, GFLOPs, millions of parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct PaperCell {
    pub table: String,
    pub dataset: String,
    pub scenario: String,
    pub level: String,
    pub model: String,
    pub map: f64,
    pub rank1: f64,
    pub gflops: f64,
    pub params_m: f64,
}

const PAPER_CSV: &str = include_str!("../data/paper_results.csv");

/// The paper's datasets under the names our dataset registry uses; CUHK03-NP's labeled and
/// detected splits both compare with the paper's CUHK03-NP column.
pub fn paper_dataset(name: &str) -> Option<&'static str> {
    name.parse::<reid_run::DatasetName>().ok()?.in_paper()
}

pub struct PaperResults {
    cells: Vec<PaperCell>,
}

impl PaperResults {
    /// The shipped table; its format is checked by a test, so a parse failure is a build bug.
    pub fn load() -> Self {
        let mut cells = Vec::new();
        for line in PAPER_CSV.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != 9 {
                continue;
            }
            let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
            cells.push(PaperCell {
                table: f[0].into(),
                dataset: f[1].into(),
                scenario: f[2].into(),
                level: f[3].into(),
                model: f[4].into(),
                map: num(f[5]),
                rank1: num(f[6]),
                gflops: num(f[7]),
                params_m: num(f[8]),
            });
        }
        Self { cells }
    }

    pub fn cells(&self) -> &[PaperCell] {
        &self.cells
    }

    fn find(
        &self,
        table: &str,
        dataset: &str,
        f: impl Fn(&PaperCell) -> bool,
    ) -> Option<&PaperCell> {
        let dataset = paper_dataset(dataset)?;
        self.cells
            .iter()
            .find(|c| c.table == table && c.dataset == dataset && f(c))
    }

    /// Table 5: a baseline backbone or a criterion of Scenario 1 at C1.
    pub fn table5(&self, model: &str, dataset: &str) -> Option<&PaperCell> {
        self.find("5", dataset, |c| c.model == model)
    }

    /// Table 6: Scenario 1 is Table 5; the others at the paper's own level (S2 at C2, S3 and
    /// S4 at 5 % of the channels).
    pub fn table6(&self, scenario: &str, model: &str, dataset: &str) -> Option<&PaperCell> {
        if scenario == "S1" {
            return self.find("5", dataset, |c| c.model == model && c.scenario == "S1");
        }
        self.find("6", dataset, |c| c.model == model && c.scenario == scenario)
    }

    /// Tables 7–9: scenario × level × criterion (Hao Li, Auto-Balanced and PSFP only).
    pub fn table789(
        &self,
        scenario: &str,
        level: &str,
        model: &str,
        dataset: &str,
    ) -> Option<&PaperCell> {
        self.find("7-9", dataset, |c| {
            c.model == model && c.scenario == scenario && c.level == level
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_completely() {
        let p = PaperResults::load();
        // 8 models x 3 datasets (Table 5) + 14 x 3 (Table 6) + 6 settings x 9 cells (Tables 7-9).
        assert_eq!(p.cells().len(), 24 + 42 + 54);
        assert!(p
            .cells()
            .iter()
            .all(|c| c.map.is_finite() && c.rank1.is_finite()));
        let c = p.table5("l1", "market1501").unwrap();
        assert_eq!((c.map, c.rank1, c.gflops), (67.04, 84.71, 2.96));
        // Table 8 disagrees with Table 5 on this cell; each lookup keeps its own table's value.
        assert_eq!(
            p.table789("S1", "C1", "auto-balanced", "dukemtmc-reid")
                .unwrap()
                .map,
            56.64
        );
        assert_eq!(
            p.table5("auto-balanced", "dukemtmc-reid").unwrap().map,
            56.45
        );
        assert_eq!(p.table6("S4", "psfp", "market1501"), None);
        assert_eq!(
            p.table6("S2", "taylor", "cuhk03-np-detected")
                .unwrap()
                .rank1,
            13.14
        );
        assert_eq!(p.table5("resnet50", "synth-target"), None);
    }
}
