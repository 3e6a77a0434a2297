//! The controller image, built and run without Docker (docs/image.md): `scripts/build-image`
//! builds it with buildah from the Dockerfile's final stage, umoci unpacks it, and its
//! entrypoint runs from the unpacked root filesystem as the image's UID against a test host,
//! where it reconciles a Fleet. No container runtime runs it: a process started here stands in
//! for the Pod's container (`chroot` into the rootfs, the image's user, an emptied
//! environment), as the test environment stands in for the kubelet elsewhere.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kube::Api;
use kurator_api::Fleet;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
/// scripts/test builds the image once before the tests and names its OCI layout here.
const LAYOUT_ENV: &str = "KURATOR_IMAGE_LAYOUT";
/// Where the host kubeconfig is "mounted" in the container, as a chart would mount a Secret.
const KUBECONFIG_IN_IMAGE: &str = "/var/run/kurator/kubeconfig";

/// Straight to the terminal (or CI's log): libtest captures `eprintln!` of passing tests, and
/// a skip or a stand-in must be seen.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{text}");
}

fn has_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The user and the arguments (ENTRYPOINT then CMD) the Dockerfile's final stage declares.
fn dockerfile_final_stage() -> (String, Vec<String>) {
    let text = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let final_stage = text
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile")
        .1;
    let instruction = |name: &str| {
        final_stage
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name}in the final stage"))
    };
    let exec_form =
        |v: String| -> Vec<String> { serde_json::from_str(&v).expect("JSON exec form") };
    let mut args = exec_form(instruction("ENTRYPOINT "));
    args.extend(exec_form(instruction("CMD ")));
    (instruction("USER "), args)
}

struct Container {
    child: Child,
    log: PathBuf,
}

impl Container {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the (not yet reaped) child process `pid` has exited: a zombie, or gone.
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// The test host's kubeconfigs name the API server by `localhost`, not 127.0.0.1: the static
/// binary's resolver (glibc's NSS, linked in) must read the container's /etc/hosts.
fn by_hostname(kubeconfig: &str) -> String {
    assert!(kubeconfig.contains("https://127.0.0.1:"), "server by IP");
    kubeconfig.replace("https://127.0.0.1:", "https://localhost:")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_as_its_user_and_reconciles_a_fleet() {
    let missing: Vec<&str> = ["buildah", "umoci"]
        .into_iter()
        .filter(|t| !has_tool(t))
        .collect();
    if !missing.is_empty() {
        say(&format!(
            "\n\n!!!!! SKIPPED: the container image test needs {} (Debian: apt-get install \
             buildah umoci; scripts/test installs them) !!!!!\n\n",
            missing.join(" and ")
        ));
        return;
    }
    kurator_cli::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let layout = match std::env::var_os(LAYOUT_ENV).filter(|v| !v.is_empty()) {
        Some(layout) => PathBuf::from(layout),
        None => {
            let layout = work.path().join("oci");
            let script = Path::new(REPO).join("scripts/build-image");
            let arg = layout.clone();
            // Its output (the seconds each half took) goes straight to the test's output.
            let status =
                tokio::task::spawn_blocking(move || Command::new(script).arg(arg).status())
                    .await
                    .unwrap()
                    .expect("scripts/build-image runs");
            assert!(status.success(), "scripts/build-image failed: {status}");
            layout
        }
    };

    // The process's effective UID: umoci and chroot need root; a developer without it still
    // runs the image's binary, as themselves.
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let bundle = work.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !root {
        unpack.arg("--rootless");
    }
    run(unpack
        .arg("--image")
        .arg(format!("{}:kurator", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");

    // Only the binary is inside: no shell, no package manager, nothing else.
    let entries: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["kurator"], "the image's root filesystem");

    // The image's runtime config (umoci's bundle config.json) is the Dockerfile's final stage.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).unwrap())
            .unwrap();
    let process = &config["process"];
    let args: Vec<String> = serde_json::from_value(process["args"].clone()).unwrap();
    let user = format!("{}:{}", process["user"]["uid"], process["user"]["gid"]);
    assert_eq!((user.clone(), args.clone()), dockerfile_final_stage());
    assert_ne!(process["user"]["uid"], 0, "a non-root UID");

    let env = kurator_testenv::TestEnv::builder()
        .members(1)
        .crds(vec![kurator_api::crds::all_yaml()])
        .start()
        .await
        .expect("control planes");

    // What the kubelet would mount: /etc/hosts and the kubeconfig Secret, readable by the UID.
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1\tlocalhost\n").unwrap();
    let kubeconfig = rootfs.join(KUBECONFIG_IN_IMAGE.trim_start_matches('/'));
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    let host_kubeconfig = std::fs::read_to_string(env.host().kubeconfig_path()).unwrap();
    std::fs::write(&kubeconfig, by_hostname(&host_kubeconfig)).unwrap();
    let (uid, gid) = (
        process["user"]["uid"].as_u64().unwrap() as u32,
        process["user"]["gid"].as_u64().unwrap() as u32,
    );
    if root {
        std::os::unix::fs::chown(&kubeconfig, Some(uid), Some(gid)).unwrap();
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = if root {
        say(&format!(
            "image.rs: running the image's entrypoint {args:?} as {user} in a chroot of its \
             unpacked root filesystem: a local process stands in for the Pod's container"
        ));
        let mut c = Command::new("chroot");
        c.arg(format!("--userspec={user}"))
            .arg("--groups=")
            .arg(&rootfs)
            .args(&args)
            .arg(format!("--kubeconfig={KUBECONFIG_IN_IMAGE}"));
        c
    } else {
        say(&format!(
            "\n!!!!! image.rs: not root: running the image's binary as the current user, not \
             {user}, and without a chroot (its /etc/hosts is the machine's) !!!!!\n"
        ));
        let mut c = Command::new(rootfs.join(args[0].trim_start_matches('/')));
        c.args(&args[1..])
            .arg(format!("--kubeconfig={}", kubeconfig.display()));
        c
    };
    command
        .arg("--lease-namespace=default")
        .arg(format!("--metrics-addr=127.0.0.1:{port}"));
    // The image's environment (ENV, and buildah's default PATH), as a runtime would pass it.
    let image_env: Vec<(String, String)> = process["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let log = env.state_dir().join("logs").join("image-controller.log");
    let container = Container {
        child: command
            .env_clear()
            .envs(image_env)
            // As a Deployment sets them: the Pod's name (the Lease identity), the log level.
            .env("POD_NAME", "kurator-image-test")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    if root {
        // chroot execs the entrypoint, so the child's pid is the controller's.
        let pid = container.child.id();
        kurator_testenv::wait::until(
            "the controller to run as the image's user",
            Duration::from_secs(10),
            || async {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let ids = |key: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                };
                let want = |id: u32| Some(vec![id.to_string(); 4]);
                if status.contains("Name:\tkurator")
                    && ids("Uid:") == want(uid)
                    && ids("Gid:") == want(gid)
                {
                    Ok(())
                } else {
                    Err(status)
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    // The member's kubeconfig also names its API server by hostname.
    let client = env.host().client().await.unwrap();
    let member = by_hostname(&env.members()[0].kubeconfig_yaml());
    let indented: String = member.lines().map(|l| format!("    {l}\n")).collect();
    let manifests = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: m1}}\nstringData:\n  value: |\n{indented}\
         ---\napiVersion: cluster.kurator.dev/v1alpha1\nkind: AttachedCluster\n\
         metadata: {{name: m1}}\nspec:\n  kubeconfig: {{name: m1, key: value}}\n\
         ---\napiVersion: fleet.kurator.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: image}}\n\
         spec:\n  clusters:\n    - {{name: m1, kind: AttachedCluster}}\n"
    );
    let objects = kurator_cli::manifest::parse(&manifests).unwrap();
    kurator_cli::manifest::apply(&client, &objects, "default")
        .await
        .unwrap();

    let fleets: Api<Fleet> = Api::namespaced(client, "default");
    let ready = kurator_testenv::wait::until(
        "the Fleet Ready with its AttachedCluster",
        Duration::from_secs(90),
        || async {
            // A crashed controller fails the test at once, with its log.
            if exited(container.child.id()) {
                panic!("the image's controller exited:\n{}", container.log());
            }
            let status = fleets.get("image").await.map_err(|e| e.to_string())?.status;
            match &status {
                Some(s)
                    if s.phase.as_deref() == Some("Ready")
                        && s.ready_clusters == 1
                        && kurator_api::conditions::is_true(&s.conditions, "Ready") =>
                {
                    Ok(())
                }
                _ => Err(format!("{status:?}")),
            }
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}\ncontroller log:\n{}", container.log());
    }
    let log = container.log();
    assert!(log.contains("leading"), "leader election:\n{log}");
    assert!(!log.contains(" ERROR "), "{log}");
}
