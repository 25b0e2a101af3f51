//! A grid as a Slurm job array: one `run --worker` per array task on the shared output folder
//! (the step locks keep each step to one worker), and a report job that task 0 submits with a
//! dependency on the whole array. [`SlurmJob::script`] writes a standard sbatch file.

use std::path::PathBuf;

use anyhow::{bail, Result};

/// Everything the sbatch file says.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmJob {
    /// `--job-name` (the experiment's name, checked to be a plain name).
    pub name: String,
    /// Array tasks, each one worker.
    pub workers: usize,
    pub cpus_per_task: usize,
    /// GPUs per task; with any, each worker runs on `cuda:0` of the GPUs Slurm gives it.
    pub gpus_per_task: usize,
    pub partition: Option<String>,
    /// Wall-time limit of each task (`HH:MM:SS` or `D-HH:MM:SS`).
    pub time: Option<String>,
    /// Absolute paths: the folder the workers start in, the config, the grid's output folder,
    /// and the binaries (the same build on every node, through the shared file system).
    pub workdir: PathBuf,
    pub config: PathBuf,
    pub out: PathBuf,
    pub reid_prune: PathBuf,
    pub reid_report: PathBuf,
    /// `--set` overrides passed on to every worker, as given.
    pub sets: Vec<String>,
}

/// `s` single-quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn q(p: &std::path::Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// A Slurm time limit: `MM`, `HH:MM:SS`, `D-HH`, `D-HH:MM:SS` (digits only, minutes and
/// seconds below 60).
pub fn check_time(t: &str) -> Result<()> {
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let digits = |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
    let ok = days.is_none_or(digits)
        && !parts.is_empty()
        && parts.len() <= 3
        && parts.iter().all(|p| digits(p))
        && parts[1..].iter().all(|p| p.len() == 2 && p < &"60");
    if !ok {
        bail!("--time {t}: expected a Slurm time limit such as 04:00:00 or 2-00:00:00");
    }
    Ok(())
}

/// A partition or job name: letters, digits, `_`, `-`, `.` (nothing a shell or Slurm would read).
pub fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        bail!("{what} '{s}': expected letters, digits, '_', '-' or '.' (at most 64)");
    }
    Ok(())
}

impl SlurmJob {
    /// Checks before anything is written.
    pub fn validate(&self) -> Result<()> {
        check_name("job name (the experiment's name)", &self.name)?;
        if !(1..=10_000).contains(&self.workers) {
            bail!("--workers {}: expected 1 to 10000", self.workers);
        }
        if !(1..=1024).contains(&self.cpus_per_task) {
            bail!("--cpus-per-task {}: expected 1 to 1024", self.cpus_per_task);
        }
        if self.gpus_per_task > 64 {
            bail!("--gpus-per-task {}: expected 0 to 64", self.gpus_per_task);
        }
        if let Some(p) = &self.partition {
            check_name("--partition", p)?;
        }
        if let Some(t) = &self.time {
            check_time(t)?;
        }
        for (what, p) in [
            ("working folder", &self.workdir),
            ("config", &self.config),
            ("output folder", &self.out),
            ("reid-prune binary", &self.reid_prune),
            ("reid-report binary", &self.reid_report),
        ] {
            if !p.is_absolute() {
                bail!(
                    "{what} {}: must be an absolute path (tasks start on other nodes)",
                    p.display()
                );
            }
        }
        for (what, p) in [
            ("working folder", &self.workdir),
            ("output folder", &self.out),
        ] {
            let text = p.to_string_lossy();
            if text
                .chars()
                .any(|c| c.is_whitespace() || "'\"%\\".contains(c))
            {
                bail!(
                    "{what} {}: #SBATCH lines cannot quote spaces, quotes, '%' or '\\' in a path; \
                     use a folder without them",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// The folder of the tasks' logs (Slurm does not create it: it must exist at submission).
    pub fn log_dir(&self) -> PathBuf {
        self.out.join("slurm")
    }

    /// The sbatch file.
    pub fn script(&self) -> String {
        let logs = self.log_dir();
        let mut s = String::from("#!/bin/bash\n");
        s += &format!(
            "# The experiment grid {} as {} Slurm workers (reid-prune slurm). Submit: sbatch <this file>\n",
            self.name, self.workers
        );
        s += "# Each array task runs one `reid-prune run --worker` on the shared output folder; task 0\n";
        s += "# also submits the report job, which starts when every task has ended.\n";
        s += &format!("#SBATCH --job-name=reid-{}\n", self.name);
        s += &format!("#SBATCH --array=0-{}\n", self.workers - 1);
        s += "#SBATCH --ntasks=1\n";
        s += &format!("#SBATCH --cpus-per-task={}\n", self.cpus_per_task);
        if self.gpus_per_task > 0 {
            s += &format!("#SBATCH --gpus-per-task={}\n", self.gpus_per_task);
        }
        if let Some(p) = &self.partition {
            s += &format!("#SBATCH --partition={p}\n");
        }
        if let Some(t) = &self.time {
            s += &format!("#SBATCH --time={t}\n");
        }
        // sbatch reads #SBATCH paths literally: no quoting there (checked for spaces by the caller)
        s += &format!("#SBATCH --output={}/worker-%A_%a.log\n", logs.display());
        s += &format!("#SBATCH --chdir={}\n", self.workdir.display());
        s += "set -euo pipefail\n";
        s += &format!(
            "export OMP_NUM_THREADS={n} RAYON_NUM_THREADS={n}\n",
            n = self.cpus_per_task
        );
        let partition = self
            .partition
            .as_ref()
            .map(|p| format!(" --partition={p}"))
            .unwrap_or_default();
        let report = format!(
            "{} --runs {} --out {}",
            q(&self.reid_report),
            q(&self.out),
            q(&self.out.join("report"))
        );
        s += "if [ \"${SLURM_ARRAY_TASK_ID:-0}\" = 0 ] && [ -n \"${SLURM_ARRAY_JOB_ID:-}\" ]; then\n";
        s += &format!(
            "  sbatch --dependency=afterany:\"$SLURM_ARRAY_JOB_ID\" --job-name=reid-{}-report{partition} \\\n    --ntasks=1 --cpus-per-task=1 --output={}/report-%j.log --chdir={} \\\n    --wrap={}\nfi\n",
            self.name,
            q(&logs),
            q(&self.workdir),
            shell_quote(&report)
        );
        let mut cmd = format!(
            "{} run --config {} --worker",
            q(&self.reid_prune),
            q(&self.config)
        );
        for set in &self.sets {
            cmd += &format!(" --set {}", shell_quote(set));
        }
        if self.gpus_per_task > 0 {
            // Slurm restricts CUDA_VISIBLE_DEVICES to the task's GPUs: the first is cuda:0
            cmd += " --set device=cuda:0";
        }
        s += &format!("exec {cmd}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> SlurmJob {
        SlurmJob {
            name: "quick".into(),
            workers: 3,
            cpus_per_task: 2,
            gpus_per_task: 0,
            partition: None,
            time: Some("01:00:00".into()),
            workdir: "/work".into(),
            config: "/work/it's here.toml".into(),
            out: "/work/runs/quick".into(),
            reid_prune: "/opt/bin/reid-prune".into(),
            reid_report: "/opt/bin/reid-report".into(),
            sets: vec!["batch_pk=8x4".into()],
        }
    }

    #[test]
    fn the_script_runs_one_worker_per_task_and_submits_the_report() {
        let s = job().script();
        assert!(s.starts_with("#!/bin/bash\n"));
        for line in [
            "#SBATCH --array=0-2",
            "#SBATCH --cpus-per-task=2",
            "#SBATCH --time=01:00:00",
            "#SBATCH --output=/work/runs/quick/slurm/worker-%A_%a.log",
            r"exec '/opt/bin/reid-prune' run --config '/work/it'\''s here.toml' --worker --set 'batch_pk=8x4'",
            "sbatch --dependency=afterany:\"$SLURM_ARRAY_JOB_ID\"",
        ] {
            assert!(s.contains(line), "missing {line:?} in:\n{s}");
        }
        assert!(s.contains("#SBATCH --chdir=/work\n"), "{s}");
        assert!(!s.contains("gpus"));
        let gpu = SlurmJob {
            gpus_per_task: 1,
            partition: Some("gpu".into()),
            ..job()
        }
        .script();
        assert!(
            gpu.contains("#SBATCH --gpus-per-task=1") && gpu.contains("#SBATCH --partition=gpu")
        );
        assert!(gpu.contains("--set device=cuda:0"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_option() {
        for (j, says) in [
            (
                SlurmJob {
                    workers: 0,
                    ..job()
                },
                "--workers 0",
            ),
            (
                SlurmJob {
                    time: Some("1h".into()),
                    ..job()
                },
                "--time 1h",
            ),
            (
                SlurmJob {
                    time: Some("01:75:00".into()),
                    ..job()
                },
                "--time 01:75:00",
            ),
            (
                SlurmJob {
                    partition: Some("gpu; rm -rf".into()),
                    ..job()
                },
                "--partition",
            ),
            (
                SlurmJob {
                    config: "rel.toml".into(),
                    ..job()
                },
                "absolute",
            ),
            (
                SlurmJob {
                    out: "/work/my runs".into(),
                    ..job()
                },
                "cannot quote",
            ),
        ] {
            let e = j.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
        job().validate().unwrap();
        for t in ["30", "04:00:00", "2-00:00:00", "1-12", "00:30"] {
            check_time(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        }
    }
}
