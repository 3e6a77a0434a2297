//! `kurator completion bash|zsh|fish`: shell completion scripts generated from the command
//! definitions by clap_complete, so they never drift from the real flags.

use clap::{Args, CommandFactory, ValueEnum};
use clap_complete::Shell;

#[derive(Args, Debug)]
#[command(after_help = "Load it in the current shell:\n  \
    bash: source <(kurator completion bash)\n  \
    zsh:  source <(kurator completion zsh)\n  \
    fish: kurator completion fish | source")]
pub struct CompletionArgs {
    /// The shell to complete for.
    pub shell: CompletionShell,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(shell: CompletionShell) -> Shell {
        match shell {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// The completion script for `shell`.
pub fn script(shell: CompletionShell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(
        Shell::from(shell),
        &mut crate::Cli::command(),
        "kurator",
        &mut out,
    );
    out
}

pub fn run(args: CompletionArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::io::stdout().write_all(&script(args.shell))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn text(shell: CompletionShell) -> String {
        String::from_utf8(script(shell)).unwrap()
    }

    #[test]
    fn bash_can_source_it() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), script(CompletionShell::Bash)).unwrap();
        let syntax = Command::new("bash")
            .arg("-n")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{}",
            String::from_utf8_lossy(&syntax.stderr)
        );
        // Sourcing it registers the completion function for `kurator`.
        let registered = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source {} && complete -p kurator",
                file.path().display()
            ))
            .output()
            .unwrap();
        let registered_text = String::from_utf8_lossy(&registered.stdout);
        assert!(
            registered.status.success() && registered_text.contains("kurator"),
            "{registered_text}{}",
            String::from_utf8_lossy(&registered.stderr)
        );
    }

    #[test]
    fn every_shell_knows_the_subcommands() {
        for shell in [
            CompletionShell::Bash,
            CompletionShell::Zsh,
            CompletionShell::Fish,
        ] {
            let script = text(shell);
            for command in ["attach", "detach", "version", "completion", "get"] {
                assert!(script.contains(command), "{shell:?} lacks {command}");
            }
        }
    }
}
