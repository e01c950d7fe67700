//! The command line: clap definitions and one function per command. Each
//! command resolves its arguments, calls the engine, renders the result and
//! maps failures to exit codes (0 success, 1 error, 2 changes present with
//! `--detailed-exitcode`).
//!
//! Terraform's single-dash long flags (`-var`, `-out`, `-auto-approve`)
//! are accepted too: [`normalize_args`] rewrites them before clap sees them.

mod commands;
pub mod planfile;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::vars::VarInputs;
use crate::session::Target;
use crate::ui::Ui;

/// berth: hosts, registries, CI variables and containers from one HCL file.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short = 'f',
        long,
        global = true,
        default_value = "berth.hcl",
        env = "BERTH_FILE"
    )]
    pub file: PathBuf,
    /// The environment (state namespace); also `BERTH_ENV`, or GitLab's
    /// `CI_ENVIRONMENT_NAME` when present.
    #[arg(short = 'e', long, global = true)]
    pub env: Option<String>,
    /// Plain output (berth prints no colour in any case; kept for
    /// compatibility with scripts that pass it).
    #[arg(long, global = true)]
    pub no_color: bool,
    /// A state backend setting, KEY=VALUE, over the file's `backend` block
    /// (repeatable).
    #[arg(long = "backend-config", global = true, value_name = "KEY=VALUE")]
    pub backend_config: Vec<String>,
    /// Show provider progress details and logs on stderr (`-vv` for debug logs).
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration: syntax, schemas, references, types.
    Validate(VarArgs),
    /// Show what apply would change.
    Plan(PlanArgs),
    /// Create, update, replace and delete to match the configuration.
    Apply(ApplyArgs),
    /// Destroy everything of the environment.
    Destroy(DestroyArgs),
    /// Show a saved plan, or the state.
    Show(ShowArgs),
    /// Print outputs of the last apply.
    Output(OutputArgs),
    /// Inspect or edit the state.
    #[command(subcommand)]
    State(StateCommand),
    /// Rewrite the file in canonical format (comments kept).
    Fmt(FmtArgs),
    /// Print the dependency graph as DOT.
    Graph,
    /// Remove a lock left behind by a killed process.
    ForceUnlock(ForceUnlockArgs),
    /// Prepare the working directory; with `--migrate-state`, copy every
    /// environment's state from another backend into the configured one.
    Init(InitArgs),
    /// Run the file's `check` blocks against what is deployed.
    Check(VarArgs),
    /// Environments (state namespaces).
    #[command(subcommand)]
    Env(EnvCommand),
}

/// `berth env ...`.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List environments with their resource counts.
    List,
}

/// Variable inputs.
#[derive(Debug, Args, Clone, Default)]
pub struct VarArgs {
    /// Set a variable: NAME=VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from an HCL file of `name = value` lines (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

/// `berth plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Variables.
    #[command(flatten)]
    pub vars: VarArgs,
    /// Save the plan to FILE for `berth apply FILE`.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 0 with no changes, 1 on error, 2 with changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Plan the destruction of everything.
    #[arg(long)]
    pub destroy: bool,
    /// Write GitLab's merge-request widget report (`{"create":N,"update":N,"delete":N}`) to FILE.
    #[arg(long = "gitlab-report", value_name = "FILE")]
    pub gitlab_report: Option<PathBuf>,
}

/// `berth apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Variables.
    #[command(flatten)]
    pub vars: VarArgs,
    /// Skip the confirmation prompt (required without a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
    /// Stream progress as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// A plan saved by `berth plan -out FILE`.
    pub plan_file: Option<PathBuf>,
}

/// `berth destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Variables.
    #[command(flatten)]
    pub vars: VarArgs,
    /// Skip the confirmation prompt (required without a terminal).
    #[arg(long)]
    pub auto_approve: bool,
    /// How many operations may run at once.
    #[arg(long, default_value_t = 10)]
    pub parallelism: usize,
}

/// `berth show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// A saved plan; without it, the state.
    pub plan_file: Option<PathBuf>,
}

/// `berth output`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// One output's name; all without it.
    pub name: Option<String>,
    /// As JSON.
    #[arg(long)]
    pub json: bool,
    /// Print a string output without quotes.
    #[arg(long)]
    pub raw: bool,
}

/// `berth state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// List the addresses in state.
    List,
    /// Show one resource's recorded attributes (secrets stay hashed).
    Show {
        /// The resource address.
        address: String,
    },
    /// Forget a resource without destroying it.
    Rm {
        /// The resource address.
        address: String,
    },
    /// Print the environment's state as JSON (secrets stay hashed).
    Pull,
    /// Replace the environment's state with a document from `state pull`.
    Push {
        /// The document, or `-` for standard input.
        #[arg(value_name = "FILE")]
        document: PathBuf,
        /// Push even if the lineage differs or the serial is older.
        #[arg(long)]
        force: bool,
    },
}

/// `berth init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Copy state from `--from-backend` into the configured backend.
    #[arg(long)]
    pub migrate_state: bool,
    /// The backend to copy from (default `local`, the `.berth/` store).
    #[arg(long, default_value = "local")]
    pub from_backend: String,
    /// A setting of the backend to copy from, KEY=VALUE (repeatable).
    #[arg(long = "from-backend-config", value_name = "KEY=VALUE")]
    pub from_backend_config: Vec<String>,
    /// Variables.
    #[command(flatten)]
    pub vars: VarArgs,
}

/// `berth fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Exit 3 if the file is not formatted, writing nothing.
    #[arg(long)]
    pub check: bool,
}

/// `berth force-unlock`.
#[derive(Debug, Args)]
pub struct ForceUnlockArgs {
    /// The lock id shown in the "state is locked" message.
    pub id: String,
}

/// Rewrites Terraform-style single-dash long flags into clap's `--flag`.
pub fn normalize_args(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    const LONG: &[&str] = &[
        "var",
        "var-file",
        "out",
        "auto-approve",
        "json",
        "detailed-exitcode",
        "parallelism",
        "destroy",
        "check",
        "raw",
        "no-color",
        "file",
        "env",
    ];
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            if let Some(rest) = s.strip_prefix('-')
                && !rest.starts_with('-')
            {
                let name = rest.split('=').next().unwrap_or(rest);
                if LONG.contains(&name) {
                    return format!("-{s}").into();
                }
            }
            a
        })
        .collect()
}

/// Runs berth with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_args(std::env::args_os()));
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(commands::run(cli))
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "berth={level},berth_docker={level},berth_ssh={level},berth_state={level}"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

impl Cli {
    fn target(&self, vars: &VarArgs) -> Target {
        let env = self
            .env
            .clone()
            .or_else(|| std::env::var("BERTH_ENV").ok().filter(|e| !e.is_empty()))
            .or_else(|| {
                std::env::var("CI_ENVIRONMENT_NAME")
                    .ok()
                    .filter(|e| !e.is_empty())
            })
            .unwrap_or_else(|| "default".to_owned());
        Target {
            file: self.file.clone(),
            env,
            vars: VarInputs {
                vars: vars.vars.clone(),
                var_files: vars.var_files.clone(),
            },
            backend_config: self.backend_config.clone(),
        }
    }

    fn ui(&self, json: bool) -> Ui {
        Ui::new(json, self.verbose > 0)
    }
}
