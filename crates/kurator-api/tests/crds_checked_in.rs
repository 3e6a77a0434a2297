//! `config/crd/` must be exactly what the types generate.

use std::path::Path;

#[test]
fn checked_in_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crd");
    let mut stale = Vec::new();
    let crds = kurator_api::crds::all();
    for crd in &crds {
        let file = dir.join(kurator_api::crds::file_name(crd));
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        if on_disk != kurator_api::crds::to_yaml(crd) {
            stale.push(file.display().to_string());
        }
    }
    let files = std::fs::read_dir(&dir).expect("config/crd exists").count();
    assert_eq!(
        files,
        crds.len(),
        "config/crd holds files that no type generates"
    );
    assert!(
        stale.is_empty(),
        "stale CRDs: {stale:?}\nregenerate with: cargo run -p kurator-cli -- crds --out-dir config/crd"
    );
}
