//! Pure: revision pinning (docs/rollout.md, "Revision pinning"). One Flux source per revision
//! in use, named `<app>-r-<id>`; the ref that pins it; which revisions are still in use (the
//! others' sources are garbage).

use std::collections::BTreeSet;

use kurator_api::rollout::{RunPhase, StagedRolloutStatus};

use crate::application::build::{MAX_NAME_LEN, fnv1a};

/// Hex digits of a commit or digest used in a pinned source's name.
const ID_HEX_DIGITS: usize = 10;
/// Characters of a non-digest revision (a chart version) kept readable in the name.
const ID_VERSION_CHARS: usize = 20;

/// The hex digest of a Flux artifact revision: `main@sha1:<hex>`, `sha1:<hex>`,
/// `latest@sha256:<hex>`, `sha256:<hex>`.
fn digest(revision: &str) -> Option<(&str, &str)> {
    let tail = revision.rsplit_once('@').map_or(revision, |(_, t)| t);
    let (algorithm, hex) = tail.split_once(':')?;
    let known = matches!(
        algorithm,
        "sha1" | "sha256" | "sha384" | "sha512" | "blake3"
    );
    (known && !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then_some((algorithm, hex))
}

/// Whether two artifact revisions name the same content. Flux spells one commit differently
/// depending on the ref that fetched it (`main@sha1:<hex>`, `refs/heads/main@sha1:<hex>`,
/// `sha1:<hex>`), so the tracking source and a pinned one are compared by digest; revisions
/// without one (chart versions) must be equal.
pub fn same_revision(a: &str, b: &str) -> bool {
    match (digest(a), digest(b)) {
        (Some((alg_a, hex_a)), Some((alg_b, hex_b))) => {
            alg_a == alg_b && hex_a.eq_ignore_ascii_case(hex_b)
        }
        _ => a == b,
    }
}

/// The commit a GitRepository revision names (`main@sha1:<hex>` → `<hex>`), for `ref.commit`.
pub fn git_commit(revision: &str) -> Option<&str> {
    digest(revision)
        .filter(|(a, _)| a.starts_with("sha1") || *a == "sha256")
        .map(|(_, h)| h)
}

/// The digest an OCIRepository revision names (`latest@sha256:<hex>` → `sha256:<hex>`), for
/// `ref.digest`. OCI digests are never SHA-1 (a git commit is not an OCI revision).
pub fn oci_digest(revision: &str) -> Option<String> {
    digest(revision)
        .filter(|(a, _)| *a != "sha1")
        .map(|(a, h)| format!("{a}:{h}"))
}

/// The short id of a revision in a pinned source's name: the first 10 hex digits of its
/// commit or digest; for anything else (a chart version) its first characters made name-safe
/// and a hash of the whole, so `1.2.3+a` and `1.2.3-a` stay apart.
pub fn revision_id(revision: &str) -> String {
    if let Some((_, hex)) = digest(revision) {
        return hex[..hex.len().min(ID_HEX_DIGITS)].to_ascii_lowercase();
    }
    let safe: String = revision
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(ID_VERSION_CHARS)
        .collect();
    let safe = safe.trim_matches('-');
    format!("{safe}-{:08x}", fnv1a(revision))
        .trim_start_matches('-')
        .to_string()
}

/// `<app>-r-<id>`, the application's name cut so that the whole fits in 63 characters (the
/// revision id is what tells pinned sources apart, so it is kept whole).
pub fn pinned_source_name(app: &str, revision: &str) -> String {
    with_suffix(app, &format!("-r-{}", revision_id(revision)))
}

/// `<app>-track`: the HelmChart that tells a Helm repository's latest chart version.
pub fn tracking_chart_name(app: &str) -> String {
    with_suffix(app, "-track")
}

/// `<app><suffix>`, the application's name cut so that the whole fits in 63 characters.
fn with_suffix(app: &str, suffix: &str) -> String {
    let room = MAX_NAME_LEN.saturating_sub(suffix.len());
    let mut end = app.len().min(room);
    while !app.is_char_boundary(end) {
        end -= 1;
    }
    let head = app[..end].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}{suffix}")
}

/// The revisions whose pinned sources must stay: any cluster's, the run's from and to, the
/// stable one, and the previous revision of the last successful run (what `undo` rolls out).
pub fn revisions_in_use(state: &StagedRolloutStatus) -> BTreeSet<String> {
    let mut used: BTreeSet<String> = state
        .clusters
        .iter()
        .filter_map(|c| c.revision.clone())
        .collect();
    used.extend(state.stable_revision.clone());
    if let Some(run) = &state.run {
        used.extend(run.from_revision.clone());
        used.insert(run.to_revision.clone());
    }
    if let Some(last) = state
        .history
        .first()
        .filter(|h| h.phase == RunPhase::Succeeded)
    {
        used.extend(last.from_revision.clone());
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kurator_api::rollout::{ClusterRolloutState, ClusterRolloutStatus, RunSummary};

    const COMMIT: &str = "main@sha1:0123456789abcdef0123456789abcdef01234567";
    const DIGEST: &str =
        "latest@sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn git_and_oci_refs_come_from_flux_revisions() {
        assert_eq!(
            git_commit(COMMIT),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(git_commit("sha1:abc"), Some("abc"));
        assert_eq!(git_commit("1.2.3"), None);
        assert_eq!(git_commit("main@sha1:not-hex"), None);
        assert_eq!(
            oci_digest(DIGEST).as_deref(),
            Some("sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567")
        );
        // A pinned OCIRepository reports the digest alone.
        assert_eq!(
            oci_digest("sha256:89abcdef").as_deref(),
            Some("sha256:89abcdef")
        );
        assert_eq!(oci_digest(COMMIT), None);
        assert_eq!(oci_digest("latest"), None);
    }

    #[test]
    fn revisions_compare_by_digest_whatever_the_ref() {
        assert!(same_revision(
            COMMIT,
            "sha1:0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(same_revision(
            COMMIT,
            "refs/heads/main@sha1:0123456789ABCDEF0123456789abcdef01234567"
        ));
        assert!(!same_revision(
            COMMIT,
            "main@sha1:1123456789abcdef0123456789abcdef01234567"
        ));
        assert!(!same_revision("main@sha1:abc", "main@sha256:abc"));
        // OCI: the tracking source says `<tag>@sha256:…`, a pinned one `sha256:…`.
        assert!(same_revision(
            DIGEST,
            "sha256:89abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(same_revision(
            DIGEST,
            "1.2.3@sha256:89ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(!same_revision(
            DIGEST,
            "latest@sha256:99abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234567"
        ));
        assert!(!same_revision(DIGEST, "latest@sha512:89abcdef"));
        assert!(same_revision("1.2.3", "1.2.3"));
        assert!(!same_revision("1.2.3", "1.2.4"));
    }

    #[test]
    fn pinned_source_names_are_short_stable_and_distinct() {
        assert_eq!(pinned_source_name("shop", COMMIT), "shop-r-0123456789");
        assert_eq!(pinned_source_name("shop", DIGEST), "shop-r-89abcdef01");
        let plus = pinned_source_name("shop", "1.2.3+a");
        let minus = pinned_source_name("shop", "1.2.3-a");
        assert!(plus.starts_with("shop-r-1-2-3-a-"), "{plus}");
        assert_ne!(plus, minus);
        let long = "a".repeat(70);
        let name = pinned_source_name(&long, COMMIT);
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with("-r-0123456789"));
        assert_eq!(tracking_chart_name("shop"), "shop-track");
        assert_eq!(tracking_chart_name(&long).len(), MAX_NAME_LEN);
        // A cut that would end on a dash does not leave `--`.
        let dashy = format!("{}-b", "a".repeat(49));
        assert_eq!(
            pinned_source_name(&dashy, COMMIT),
            format!("{}-r-0123456789", "a".repeat(49))
        );
    }

    #[test]
    fn sources_in_use_cover_clusters_run_stable_and_undo() {
        let t = Time("2026-12-02T04:00:00Z".parse().unwrap());
        let cluster = |name: &str, revision: &str| ClusterRolloutStatus {
            name: name.into(),
            stage: None,
            revision: Some(revision.into()),
            state: ClusterRolloutState::Healthy,
            since: t.clone(),
            policy_failures_at_start: None,
            message: None,
        };
        let summary = |phase, from: &str, to: &str| RunSummary {
            id: 1,
            from_revision: Some(from.into()),
            to_revision: to.into(),
            phase,
            started_at: t.clone(),
            finished_at: t.clone(),
            stage: "rest".into(),
            message: None,
            failed_gates: Vec::new(),
        };
        let mut state = StagedRolloutStatus {
            stable_revision: Some("v2".into()),
            clusters: vec![cluster("m1", "v2"), cluster("m2", "v3")],
            history: vec![summary(RunPhase::Succeeded, "v1", "v2")],
            ..Default::default()
        };
        let names = |s: &StagedRolloutStatus| revisions_in_use(s).into_iter().collect::<Vec<_>>();
        assert_eq!(names(&state), ["v1", "v2", "v3"]);
        // After a rollback, the run before is no longer what undo would roll out.
        state
            .history
            .insert(0, summary(RunPhase::RolledBack, "v2", "v4"));
        assert_eq!(names(&state), ["v2", "v3"]);
    }
}
