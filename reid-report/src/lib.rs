//! reid-report: reads run folders (`metrics.json`) and writes the paper's tables and figures.
//! Not implemented yet (see the reports issue); this crate only reserves its place in the workspace.
