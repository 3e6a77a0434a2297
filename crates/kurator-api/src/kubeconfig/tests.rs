use super::*;

/// Stands in for key material: it must never show up in a problem's message.
const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbA==";

/// Two contexts: `a` (current) and `b`, each with its own cluster and user; `user_b` is the
/// YAML of user b's `user:` map.
fn two_contexts(user_b: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: a
preferences: {{}}
clusters:
- name: cluster-a
  cluster:
    server: https://a.example:6443
    certificate-authority-data: Q0EtQQ==
- name: cluster-b
  cluster:
    server: https://b.example:6443
    certificate-authority-data: Q0EtQg==
contexts:
- name: a
  context:
    cluster: cluster-a
    user: user-a
- name: b
  context:
    cluster: cluster-b
    user: user-b
    namespace: team-b
users:
- name: user-a
  user:
    client-certificate-data: Q0VSVC1B
    client-key-data: {SECRET}
- name: user-b
  user:
{user_b}"
    )
}

fn reduced_yaml(text: &str, context: Option<&str>) -> String {
    let reduced = reduce(&parse(text).unwrap(), context).unwrap();
    serde_saphyr::to_string(&reduced).unwrap()
}

fn problem(text: &str, context: Option<&str>) -> String {
    let problem = reduce(&parse(text).unwrap(), context)
        .expect_err("kubeconfig accepted")
        .to_string();
    assert!(!problem.contains(SECRET), "{problem}");
    problem
}

const TOKEN_USER: &str = "    token: abc.def\n";

#[test]
fn the_current_context_is_kept_with_its_inline_data() {
    insta::assert_snapshot!(reduced_yaml(&two_contexts(TOKEN_USER), None), @r"
    clusters:
    - name: cluster-a
      cluster:
        server: https://a.example:6443
        certificate-authority-data: Q0EtQQ==
    users:
    - name: user-a
      user:
        client-certificate-data: Q0VSVC1B
        client-key-data: c2VjcmV0LWtleS1tYXRlcmlhbA==
    contexts:
    - name: a
      context:
        cluster: cluster-a
        user: user-a
    current-context: a
    kind: Config
    apiVersion: v1
    ");
}

#[test]
fn a_named_context_is_kept_and_made_current() {
    insta::assert_snapshot!(reduced_yaml(&two_contexts(TOKEN_USER), Some("b")), @r"
    clusters:
    - name: cluster-b
      cluster:
        server: https://b.example:6443
        certificate-authority-data: Q0EtQg==
    users:
    - name: user-b
      user:
        token: abc.def
    contexts:
    - name: b
      context:
        cluster: cluster-b
        user: user-b
        namespace: team-b
    current-context: b
    kind: Config
    apiVersion: v1
    ");
}

#[test]
fn plugins_and_files_of_other_contexts_do_not_matter() {
    let exec_b =
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n";
    let reduced = reduce(&parse(&two_contexts(exec_b)).unwrap(), Some("a")).unwrap();
    assert_eq!(reduced.auth_infos.len(), 1);
    assert_eq!(reduced.auth_infos[0].name, "user-a");
    // The whole file is refused by the controller's check, the reduction is not.
    assert!(check_self_contained(&parse(&two_contexts(exec_b)).unwrap()).is_err());
    check_self_contained(&reduced).unwrap();
}

#[test]
fn credential_plugins_are_refused() {
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n      args: [eks, get-token]\n";
    insta::assert_snapshot!(problem(&two_contexts(exec), Some("b")), @"user \"user-b\" uses an exec credential plugin (exec), which runs a program to get credentials; use a client certificate (client-certificate-data, client-key-data) or a token (for example a ServiceAccount token) instead");
    let provider = "    auth-provider:\n      name: gcp\n      config: {}\n";
    insta::assert_snapshot!(problem(&two_contexts(provider), Some("b")), @"user \"user-b\" uses an auth-provider plugin (auth-provider), which runs a program to get credentials; use a client certificate (client-certificate-data, client-key-data) or a token (for example a ServiceAccount token) instead");
}

#[test]
fn file_paths_are_refused_naming_the_field_and_the_fix() {
    let cert = "    client-certificate: /home/me/.kube/b.crt\n    client-key-data: Zm9v\n";
    insta::assert_snapshot!(problem(&two_contexts(cert), Some("b")), @"user \"user-b\": client-certificate is a file path; embed the file's content as client-certificate-data");
    let key = "    client-certificate-data: Zm9v\n    client-key: /home/me/.kube/b.key\n";
    insta::assert_snapshot!(problem(&two_contexts(key), Some("b")), @"user \"user-b\": client-key is a file path; embed the file's content as client-key-data");
    let token_file = "    tokenFile: /var/run/token\n";
    insta::assert_snapshot!(problem(&two_contexts(token_file), Some("b")), @"user \"user-b\": tokenFile is a file path; put the token itself in token");
    let ca_file = two_contexts(TOKEN_USER).replace(
        "certificate-authority-data: Q0EtQg==",
        "certificate-authority: /home/me/.kube/ca.crt",
    );
    insta::assert_snapshot!(problem(&ca_file, Some("b")), @"cluster \"cluster-b\": certificate-authority is a file path; embed the file's content as certificate-authority-data");
}

#[test]
fn missing_contexts_clusters_and_users_are_named() {
    let text = two_contexts(TOKEN_USER);
    insta::assert_snapshot!(problem(&text, Some("c")), @r#"has no context "c" (its contexts: "a", "b")"#);
    let no_current = text.replace("current-context: a\n", "");
    insta::assert_snapshot!(problem(&no_current, None), @r#"has no current-context; choose one of its contexts ("a", "b")"#);
    let no_cluster = text.replace("cluster: cluster-b", "cluster: gone");
    insta::assert_snapshot!(problem(&no_cluster, Some("b")), @r#"context "b" names cluster "gone", which the kubeconfig does not define"#);
    let no_user = text.replace("user: user-b", "user: nobody");
    insta::assert_snapshot!(problem(&no_user, Some("b")), @r#"context "b" names user "nobody", which the kubeconfig does not define"#);
    let empty = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n";
    insta::assert_snapshot!(problem(empty, None), @"has no current-context; choose one of its contexts (none)");
}

#[test]
fn garbage_is_refused_without_echoing_it() {
    let problem = parse(&format!("clusters: [{SECRET}"))
        .unwrap_err()
        .to_string();
    assert!(!problem.contains(SECRET), "{problem}");
    assert_eq!(problem, KubeconfigProblem::Unparseable.to_string());
}
