//! Readers for the Alibaba GPU trace v2023 ("openb") CSV files: the node list and the task (pod) lists.
//!
//! Columns are found by header name, so files that omit trailing columns (e.g. `openb_pod_list_multigpu20.csv`)
//! read the same. Every error names `file:line:column` (the column is the field's 1-based position) and the
//! column's name; nothing panics on bad input.

use serde::Serialize;
use sovra_domain::{
    ClusterConfig, GPU_MILLI, Gpu, Health, Job, Node, NvlinkWish, Pool, Purpose, ResidencyClass, Resources, Zone,
};
use std::io::Read;
use std::path::Path;

/// Limits on trace files, so that a file cannot make the simulator allocate without bound. The vendored traces
/// are far below them (575 KB, 8152 tasks, 1213 nodes); see docs/simulator.md, "Limits".
pub mod limits {
    /// Largest trace file, bytes (checked before reading a file, and while reading any input).
    pub const MAX_TRACE_BYTES: u64 = 64 << 20;
    /// Most tasks in a task list.
    pub const MAX_TASKS: usize = 1_000_000;
    /// Most nodes in a node list.
    pub const MAX_NODES: usize = 100_000;
}

/// The error a [`Limited`] reader returns past its limit.
#[derive(Debug)]
struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over the limit of {} bytes", limits::MAX_TRACE_BYTES)
    }
}

impl std::error::Error for OverLimit {}

/// A reader that fails with [`OverLimit`] once more than `left` bytes would be read (`Read::take` would end
/// silently, and a cut-off file must not read as a shorter valid one).
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            return match self.inner.read(&mut [0u8; 1])? {
                0 => Ok(0),
                _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, OverLimit)),
            };
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// A CSV error in words; one caused by [`OverLimit`] says what to do.
fn csv_message(e: &csv::Error, what: &str) -> String {
    if let csv::ErrorKind::Io(io) = e.kind()
        && io.get_ref().is_some_and(|x| x.is::<OverLimit>())
    {
        return format!(
            "the file is over the limit of {} bytes for a trace file; split it or use a sample",
            limits::MAX_TRACE_BYTES
        );
    }
    format!("{what}: {e}")
}

/// An error reading a trace file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TraceError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when the file could not be read at all).
    pub line: u64,
    /// 1-based field position (0 when the whole line or file is at fault).
    pub column: usize,
    /// What is wrong and what to do.
    pub message: String,
}

/// One GPU node of `openb_node_list_*.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceNode {
    /// `sn`.
    pub name: String,
    /// `cpu_milli`.
    pub cpu_milli: u64,
    /// `memory_mib`.
    pub memory_mib: u64,
    /// `gpu`: number of GPUs.
    pub gpus: u32,
    /// `model`: GPU model (empty for CPU-only nodes).
    pub model: String,
}

/// One task of `openb_pod_list_*.csv`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceTask {
    /// `name`.
    pub name: String,
    /// `cpu_milli`.
    pub cpu_milli: u64,
    /// `memory_mib`.
    pub memory_mib: u64,
    /// `num_gpu`.
    pub num_gpu: u32,
    /// `gpu_milli`, as the FGD simulator reads it: 0 when `num_gpu` is 0, capped at 1000.
    pub gpu_milli: u32,
    /// `gpu_spec`: allowed models (`|`-separated in the file, empty tokens dropped).
    pub gpu_models: Vec<String>,
}

impl TraceTask {
    /// Total milli-GPU the task takes.
    pub fn total_gpu_milli(&self) -> u64 {
        u64::from(self.num_gpu) * u64::from(self.gpu_milli)
    }

    /// The task as a one-replica Sovra job.
    pub fn to_job(&self, kind: Purpose, residency: &str) -> Job {
        Job {
            name: self.name.clone(),
            kind,
            queue: "trace".into(),
            priority: 0,
            residency: residency.into(),
            replicas: 1,
            resources: Resources {
                gpus: self.num_gpu,
                gpu_milli: self.gpu_milli,
                gpu_models: self.gpu_models.clone(),
                cpu_milli: self.cpu_milli,
                memory_mib: self.memory_mib,
            },
            nvlink: NvlinkWish::None,
            run: None,
            model: None,
            exception: None,
        }
    }
}

/// Opens `path` for one of the `read_*` functions; a failure (or a file over [`limits::MAX_TRACE_BYTES`], checked
/// before reading) is a [`TraceError`] at line 0.
fn open_file(path: &Path) -> Result<(String, std::fs::File), TraceError> {
    let file = path.display().to_string();
    let err = |message: String| TraceError { file: file.clone(), line: 0, column: 0, message };
    let f = std::fs::File::open(path).map_err(|e| err(format!("cannot open the file: {e}")))?;
    let len = f.metadata().map_err(|e| err(format!("cannot open the file: {e}")))?.len();
    if len > limits::MAX_TRACE_BYTES {
        return Err(err(format!(
            "the file is {len} bytes, over the limit of {} bytes for a trace file; split it or use a sample",
            limits::MAX_TRACE_BYTES
        )));
    }
    Ok((file, f))
}

/// Rows of a CSV with named columns.
struct Table<R> {
    file: String,
    reader: csv::Reader<Limited<R>>,
    columns: Vec<(&'static str, usize)>,
}

impl<R: Read> Table<R> {
    fn new(file: &str, input: R, required: &[&'static str], optional: &[&'static str]) -> Result<Self, TraceError> {
        let file = file.to_string();
        let err = |line, message| TraceError { file: file.clone(), line, column: 0, message };
        let input = Limited { inner: input, left: limits::MAX_TRACE_BYTES };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let headers = reader.headers().map_err(|e| err(1, csv_message(&e, "cannot read the header line")))?.clone();
        let mut columns = Vec::new();
        for &name in required.iter().chain(optional) {
            match headers.iter().position(|h| h.trim() == name) {
                Some(i) => columns.push((name, i)),
                None if required.contains(&name) => {
                    return Err(err(
                        1,
                        format!("missing column {name:?}; the header must name {}", required.join(", ")),
                    ));
                }
                None => {}
            }
        }
        Ok(Table { file, reader, columns })
    }

    fn rows(&mut self) -> impl Iterator<Item = Result<Row, TraceError>> + '_ {
        let file = self.file.clone();
        let columns = self.columns.clone();
        self.reader.records().map(move |r| {
            let r = r.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                TraceError { file: file.clone(), line, column: 0, message: csv_message(&e, "malformed CSV") }
            })?;
            let line = r.position().map_or(0, |p| p.line());
            Ok(Row { file: file.clone(), line, record: r, columns: columns.clone() })
        })
    }
}

struct Row {
    file: String,
    line: u64,
    record: csv::StringRecord,
    columns: Vec<(&'static str, usize)>,
}

impl Row {
    fn err(&self, column: usize, message: String) -> TraceError {
        TraceError { file: self.file.clone(), line: self.line, column, message }
    }

    fn text(&self, name: &str) -> Result<Option<(&str, usize)>, TraceError> {
        let Some(&(_, i)) = self.columns.iter().find(|(n, _)| *n == name) else { return Ok(None) };
        Ok(Some((self.record.get(i).map(str::trim).unwrap_or(""), i + 1)))
    }

    fn required(&self, name: &str) -> Result<(&str, usize), TraceError> {
        match self.text(name)? {
            Some((t, c)) if !t.is_empty() => Ok((t, c)),
            Some((_, c)) => Err(self.err(c, format!("{name} is empty; give a value"))),
            None => Err(self.err(0, format!("{name} is missing"))),
        }
    }

    fn number(&self, name: &str) -> Result<u64, TraceError> {
        let (t, c) = self.required(name)?;
        if t.starts_with('-') {
            return Err(self.err(c, format!("{name} is {t}, a negative number; it must be 0 or more")));
        }
        t.parse::<u64>().map_err(|_| self.err(c, format!("{name} is {t:?}, not a whole number")))
    }
}

/// Reads a node list (`sn,cpu_milli,memory_mib,gpu,model`) from a file; see [`read_nodes`].
pub fn load_nodes(path: &Path) -> Result<Vec<TraceNode>, TraceError> {
    let (file, f) = open_file(path)?;
    read_nodes(&file, f)
}

/// Reads a node list (`sn,cpu_milli,memory_mib,gpu,model`) from `reader`; `file` names the source in errors
/// (`file:line:column`). Nodes have at most 64 GPUs, and a node with GPUs must name their model.
pub fn read_nodes<R: Read>(file: &str, reader: R) -> Result<Vec<TraceNode>, TraceError> {
    let mut table = Table::new(file, reader, &["sn", "cpu_milli", "memory_mib", "gpu"], &["model"])?;
    let mut out = Vec::new();
    for row in table.rows() {
        let row = row?;
        if out.len() == limits::MAX_NODES {
            return Err(row.err(0, format!("more than {} nodes, the limit of a node list", limits::MAX_NODES)));
        }
        let gpus = row.number("gpu")?;
        let model = row.text("model")?.map(|(t, _)| t.to_string()).unwrap_or_default();
        if gpus > 0 && model.is_empty() {
            return Err(row.err(0, format!("node has {gpus} GPUs but no model; fill the model column")));
        }
        if gpus > 64 {
            return Err(row.err(0, format!("node has {gpus} GPUs; at most 64 are supported")));
        }
        out.push(TraceNode {
            name: row.required("sn")?.0.to_string(),
            cpu_milli: row.number("cpu_milli")?,
            memory_mib: row.number("memory_mib")?,
            gpus: gpus as u32,
            model,
        });
    }
    Ok(out)
}

/// Reads a task list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`), normalising GPU fields as the
/// FGD simulator does (`data/pod_csv_to_yaml.py`): `num_gpu` 0 means CPU-only whatever the other columns say;
/// `gpu_milli` above 1000 counts as 1000. See [`read_tasks`].
pub fn load_tasks(path: &Path) -> Result<Vec<TraceTask>, TraceError> {
    let (file, f) = open_file(path)?;
    read_tasks(&file, f)
}

/// Reads a task list (`name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec,...]`) from `reader`; `file` names the
/// source in errors (`file:line:column`). GPU fields are normalised as in [`load_tasks`]: every task read has
/// `gpu_milli` of at most 1000, and 0 exactly when `num_gpu` is 0.
pub fn read_tasks<R: Read>(file: &str, reader: R) -> Result<Vec<TraceTask>, TraceError> {
    let mut table =
        Table::new(file, reader, &["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"], &["gpu_spec"])?;
    let mut out = Vec::new();
    for row in table.rows() {
        let row = row?;
        if out.len() == limits::MAX_TASKS {
            return Err(row.err(0, format!("more than {} tasks, the limit of a task list", limits::MAX_TASKS)));
        }
        let num_gpu = row.number("num_gpu")?;
        let milli = row.number("gpu_milli")?;
        if num_gpu > 64 {
            return Err(row.err(0, format!("num_gpu is {num_gpu}; at most 64 are supported")));
        }
        let gpu_milli = if num_gpu == 0 { 0 } else { milli.min(u64::from(GPU_MILLI)) as u32 };
        if num_gpu > 0 && gpu_milli == 0 {
            return Err(row.err(0, "num_gpu > 0 but gpu_milli is 0; give the milli per GPU".into()));
        }
        let gpu_models = match (num_gpu, row.text("gpu_spec")?) {
            (0, _) | (_, None) => vec![],
            (_, Some((spec, _))) => spec.split('|').filter(|s| !s.is_empty()).map(String::from).collect(),
        };
        out.push(TraceTask {
            name: row.required("name")?.0.to_string(),
            cpu_milli: row.number("cpu_milli")?,
            memory_mib: row.number("memory_mib")?,
            num_gpu: num_gpu as u32,
            gpu_milli,
            gpu_models,
        });
    }
    Ok(out)
}

/// The residency class trace jobs use: any zone.
pub const TRACE_CLASS: &str = "any";

/// A cluster of the trace's nodes: one zone, one training pool, one permissive residency class
/// ([`TRACE_CLASS`]). GPUs have no NVLink (the trace does not say).
pub fn cluster_of(nodes: &[TraceNode]) -> ClusterConfig {
    ClusterConfig {
        zones: vec![Zone {
            id: "alibaba".into(),
            country: "CN".into(),
            region: "trace".into(),
            jurisdiction: "CN".into(),
            operator: "Alibaba (trace)".into(),
            operator_hq: "CN".into(),
            certifications: Default::default(),
        }],
        pools: vec![Pool { id: "trace".into(), zone: "alibaba".into(), purpose: Purpose::Training }],
        residency_classes: vec![ResidencyClass { name: TRACE_CLASS.into(), ..Default::default() }],
        nodes: nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                pool: "trace".into(),
                cpu_milli: n.cpu_milli,
                memory_mib: n.memory_mib,
                gpus: (0..n.gpus)
                    .map(|i| Gpu {
                        uuid: format!("GPU-{}-{i}", n.name),
                        model: n.model.clone(),
                        memory_mib: 0,
                        numa_node: None,
                        nvlink_peers: vec![],
                        health: Health::Healthy,
                        mig: vec![],
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile_like::TempFile {
        tempfile_like::TempFile::new(text)
    }

    /// A tiny temporary-file helper (std only).
    mod tempfile_like {
        use super::*;
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(text: &str) -> TempFile {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("sovra-trace-{}-{n}.csv", std::process::id()));
                std::fs::File::create(&p).unwrap().write_all(text.as_bytes()).unwrap();
                TempFile(p)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn reads_the_vendored_trace() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/alibaba-gpu-v2023");
        let nodes = load_nodes(&dir.join("openb_node_list_gpu_node.csv")).unwrap();
        assert_eq!(nodes.len(), 1213);
        assert_eq!(nodes.iter().map(|n| u64::from(n.gpus)).sum::<u64>(), 6212);
        let tasks = load_tasks(&dir.join("openb_pod_list_default.csv")).unwrap();
        assert_eq!(tasks.len(), 8152);
        // multigpu20 has no gpu_spec column: still readable.
        assert!(load_tasks(&dir.join("openb_pod_list_multigpu20.csv")).unwrap().len() > 8000);
    }

    #[test]
    fn readers_take_in_memory_bytes_and_name_the_given_file() {
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\np,1,2,1,460,V100M16|V100M32\n";
        let tasks = read_tasks("mem.csv", text.as_bytes()).unwrap();
        assert_eq!(tasks, load_tasks(&file(text).0).unwrap());
        assert_eq!(tasks[0].gpu_models, ["V100M16", "V100M32"]);
        let nodes = read_nodes("mem.csv", &b"sn,cpu_milli,memory_mib,gpu,model\nn,1,2,8,G2\n"[..]).unwrap();
        assert_eq!(nodes[0].gpus, 8);
        let e = read_tasks("mem.csv", &b"name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,x,0,0\n"[..]).unwrap_err();
        assert_eq!(e.to_string(), "mem.csv:2:3: memory_mib is \"x\", not a whole number");
    }

    #[test]
    fn bad_rows_name_file_line_and_column() {
        let cases = [
            ("name,cpu_milli,memory_mib,num_gpu\n", "missing column \"gpu_milli\""),
            (
                "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,x,0,0\n",
                ":2:3: memory_mib is \"x\", not a whole number",
            ),
            ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,-5,1,0,0\n", ":2:2: cpu_milli is -5, a negative number"),
            ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,1,\n", ":2:5: gpu_milli is empty"),
            ("name,cpu_milli,memory_mib,num_gpu,gpu_milli\np,1,1,2,0\n", ":2:0: num_gpu > 0 but gpu_milli is 0"),
        ];
        for (text, want) in cases {
            let f = file(text);
            let e = load_tasks(&f.0).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
            assert!(e.starts_with(&f.0.display().to_string()));
        }
        let f = file("sn,cpu_milli,memory_mib,gpu,model\nn,1,1,2,\n");
        assert!(load_nodes(&f.0).unwrap_err().to_string().contains(":2:0: node has 2 GPUs but no model"));
    }
}
