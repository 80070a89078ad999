//! The NEO/py column: runs `neopy_bench.py` (our script, embedded in the binary) with a
//! Python that has NEO/py's client and ZODB, against a NEO/py cluster, and reads the
//! figures it prints.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::figures::Figures;
use crate::workload::Workload;

const SCRIPT: &str = include_str!("../neopy_bench.py");

/// How to run NEO/py's client.
pub struct NeoPy {
    pub python: PathBuf,
    /// Added to PYTHONPATH: NEO/py's source tree (holding the `neo` package).
    pub source: Option<PathBuf>,
}

impl NeoPy {
    pub fn run(
        &self,
        label: &str,
        master: &str,
        cluster: &str,
        workload: &Workload,
    ) -> Result<Figures> {
        let dir = tempfile::Builder::new()
            .prefix("neobench-py-")
            .tempdir()
            .context("creating a directory for the NEO/py script")?;
        let script = dir.path().join("neopy_bench.py");
        std::fs::write(&script, SCRIPT).context("writing the NEO/py script")?;
        let settings = json!({
            "master": master,
            "cluster": cluster,
            "objects": workload.objects,
            "object_size": workload.object_size,
            "serial_loads": workload.serial_loads,
            "seconds": workload.seconds,
            "connections": workload.connections,
            "committers": workload.committers,
            "seed": workload.seed,
        });
        let mut command = Command::new(&self.python);
        command
            .arg(&script)
            .arg(settings.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(source) = &self.source {
            let mut path = source.clone().into_os_string();
            if let Some(old) = std::env::var_os("PYTHONPATH") {
                path.push(":");
                path.push(old);
            }
            command.env("PYTHONPATH", path);
        }
        let output = command.output().with_context(|| {
            format!(
                "running {} (set --python or NEO_PYTHON)",
                self.python.display()
            )
        })?;
        if !output.status.success() {
            bail!("the NEO/py script failed ({})", output.status);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("the NEO/py script printed no figures")?;
        let value: serde_json::Value =
            serde_json::from_str(line).context("parsing the NEO/py script's figures")?;
        Figures::from_json(label, &value)
    }
}
