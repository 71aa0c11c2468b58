//! The core stays readable: no source file over 700 lines (functions over 80 lines are refused by
//! clippy's `too_many_lines`, configured in `core/clippy.toml`), and no simulator or checker code in
//! the published crate (it lives in `genesys-keepalive-sim`).

use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 700;

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("core/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_core_file_is_over_700_lines_and_none_is_sim_or_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 10, "found {files:?}");
    let mut over = Vec::new();
    for f in &files {
        let lines = std::fs::read_to_string(f)
            .expect("UTF-8 source")
            .lines()
            .count();
        if lines > MAX_FILE_LINES {
            over.push(format!("{}: {lines} lines", f.display()));
        }
        let name = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        assert!(
            !matches!(name, "sim" | "check"),
            "{} belongs in genesys-keepalive-sim",
            f.display()
        );
    }
    assert!(over.is_empty(), "over {MAX_FILE_LINES} lines: {over:#?}");
}
