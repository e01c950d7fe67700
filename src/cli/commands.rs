//! One function per command, each returning the process exit code.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use super::{
    ApplyArgs, Cli, Command, DestroyArgs, FmtArgs, OutputArgs, PlanArgs, ShowArgs, StateCommand,
    planfile,
};
use crate::config::validate::SchemaLookup;
use crate::error::Error;
use crate::plan::{self, Plan};
use crate::session::{self, Session, Target};
use crate::ui::Ui;

/// Dispatches to the command.
pub async fn run(cli: Cli) -> ExitCode {
    crate::interrupt::install();
    let result = match &cli.command {
        Command::Validate(vars) => validate(&cli, &cli.target(vars)),
        Command::Plan(args) => cmd_plan(&cli, args).await,
        Command::Apply(args) => cmd_apply(&cli, args).await,
        Command::Destroy(args) => cmd_destroy(&cli, args).await,
        Command::Show(args) => cmd_show(&cli, args).await,
        Command::Output(args) => cmd_output(&cli, args).await,
        Command::State(cmd) => cmd_state(&cli, cmd).await,
        Command::Fmt(args) => cmd_fmt(&cli, args),
        Command::Graph => cmd_graph(&cli),
        Command::ForceUnlock(args) => cmd_force_unlock(&cli, &args.id).await,
        Command::Env(super::EnvCommand::List) => cmd_env_list(&cli).await,
        Command::Check(vars) => cmd_check(&cli, vars).await,
        Command::Init(args) => cmd_init(&cli, args).await,
    };
    let json = match &cli.command {
        Command::Plan(args) => args.json,
        Command::Apply(args) => args.json,
        _ => false,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                report_json(&e);
            } else {
                report(&e);
            }
            ExitCode::from(1)
        }
    }
}

/// Errors as JSON lines on stdout, in the shape of Terraform's
/// machine-readable diagnostics.
fn report_json(e: &Error) {
    let diagnostics: Vec<serde_json::Value> = match e {
        Error::Config(diags) => diags
            .0
            .iter()
            .map(|d| {
                let range = d.location.as_ref().map(|(file, span)| {
                    let (line, column) = file.line_col(span.start);
                    let (end_line, end_column) = file.line_col(span.end);
                    serde_json::json!({
                        "filename": file.name,
                        "start": { "line": line, "column": column, "byte": span.start },
                        "end": { "line": end_line, "column": end_column, "byte": span.end },
                    })
                });
                serde_json::json!({
                    "severity": match d.severity { crate::diag::Severity::Error => "error", crate::diag::Severity::Warning => "warning" },
                    "summary": d.summary,
                    "detail": d.label.clone().or_else(|| d.help.clone()).unwrap_or_default(),
                    "range": range,
                })
            })
            .collect(),
        other => vec![serde_json::json!({ "severity": "error", "summary": other.to_string(), "detail": "" })],
    };
    for d in diagnostics {
        let message = d["summary"].as_str().unwrap_or_default().to_owned();
        println!(
            "{}",
            serde_json::json!({ "@level": "error", "@message": format!("Error: {message}"), "type": "diagnostic", "diagnostic": d })
        );
    }
}

fn report(e: &Error) {
    let mut err = std::io::stderr().lock();
    match e {
        Error::Config(diags) => {
            let _ = write!(err, "{}", diags.render());
        }
        other => {
            let _ = writeln!(err, "Error: {other}");
        }
    }
}

fn load(target: &Target) -> Result<session::Loaded, Error> {
    let loaded = session::load(target)?;
    if !loaded.warnings.is_empty() {
        eprint!(
            "{}",
            crate::diag::Diagnostics(loaded.warnings.clone()).render()
        );
    }
    Ok(loaded)
}

fn validate(cli: &Cli, target: &Target) -> Result<ExitCode, Error> {
    let loaded = load(target)?;
    // Evaluate every resource with everything unknown that is not yet
    // known, so that wrong types of literal values are found now.
    let mut scope = loaded.scope.clone();
    let mut diags = crate::diag::Diagnostics::default();
    for node in &loaded.graph.order {
        if let Some(name) = node.strip_prefix("local.") {
            if let Some(local) = loaded.config.locals.iter().find(|l| l.name == name) {
                match scope.eval(&loaded.config, &local.value) {
                    Ok(v) => scope.set_local(name, v, false),
                    Err(d) => diags.push(d),
                }
            }
            continue;
        }
        if let Some(resource) = loaded.config.resource(node)
            && let Some(schema) = loaded.registry.schema(&resource.type_name)
        {
            match scope.eval_body(&loaded.config, &resource.body, schema) {
                Ok(desired) => diags.extend(crate::plan::provider_checks(
                    &loaded.config,
                    resource,
                    &loaded.registry,
                    &desired,
                )),
                Err(d) => diags.extend(d),
            }
        }
        scope.set_resource(node, None, &[], &Default::default());
    }
    if diags.has_errors() {
        return Err(Error::Config(diags));
    }
    let _ = cli;
    println!("The configuration is valid.");
    Ok(ExitCode::SUCCESS)
}

/// Runs `body` with the state locked, releasing the lock whatever happens.
async fn with_session<T>(
    target: &Target,
    operation: &str,
    body: impl AsyncFnOnce(&Session) -> Result<T, Error>,
) -> Result<T, Error> {
    let loaded = load(target)?;
    let session = Session::open(target, loaded, operation).await?;
    let result = match session.configure_providers().await {
        Ok(()) => body(&session).await,
        Err(e) => Err(e),
    };
    let closed = session.close().await;
    let value = result?;
    closed?;
    Ok(value)
}

async fn cmd_plan(cli: &Cli, args: &PlanArgs) -> Result<ExitCode, Error> {
    let target = cli.target(&args.vars);
    let ui = cli.ui(args.json);
    let (plan, text, json) = with_session(&target, "plan", async |session| {
        let mut scope = session.loaded.scope.clone();
        let plan = plan::plan(session, &mut scope, args.destroy).await?;
        let text = plan::render::render(&plan, &session.loaded.registry);
        let json = plan::json::to_json(&plan);
        if let Some(out) = &args.out {
            planfile::write(out, &target, session, &plan, &text, &json)?;
        }
        if let Some(report) = &args.gitlab_report {
            write_gitlab_report(report, &plan)?;
        }
        Ok((plan, text, json))
    })
    .await?;
    if args.json {
        let _ = json;
        ui.result(&crate::plan::json::stream(&plan, "plan"));
    } else {
        ui.result(&text);
        if let Some(out) = &args.out {
            ui.result(&format!(
                "\nSaved the plan to {0}. To perform exactly these actions, run:\n    berth apply {0}\n",
                out.display()
            ));
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn confirm(ui: &Ui, question: &str, auto_approve: bool) -> Result<bool, Error> {
    if auto_approve {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused(
            "no terminal to ask for confirmation: pass --auto-approve to run without one"
                .to_owned(),
        ));
    }
    ui.result(&format!(
        "\n{question}\n  Only 'yes' will be accepted to approve.\n\n  Enter a value: "
    ));
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::Refused(format!("cannot read the answer: {e}")))?;
    Ok(line.trim() == "yes")
}

async fn cmd_apply(cli: &Cli, args: &ApplyArgs) -> Result<ExitCode, Error> {
    let target = cli.target(&args.vars);
    let ui = cli.ui(args.json);
    let saved = match &args.plan_file {
        Some(path) => Some(planfile::read(path)?),
        None => None,
    };
    let target = match &saved {
        Some(saved) => saved.target(&target),
        None => target,
    };
    let approve = args.auto_approve || saved.is_some();
    converge(
        &target,
        &ui,
        "apply",
        false,
        approve,
        args.parallelism,
        saved.as_ref(),
    )
    .await
}

async fn cmd_destroy(cli: &Cli, args: &DestroyArgs) -> Result<ExitCode, Error> {
    let target = cli.target(&args.vars);
    let ui = cli.ui(false);
    converge(
        &target,
        &ui,
        "destroy",
        true,
        args.auto_approve,
        args.parallelism,
        None,
    )
    .await
}

async fn converge(
    target: &Target,
    ui: &Ui,
    operation: &str,
    destroy: bool,
    auto_approve: bool,
    parallelism: usize,
    saved: Option<&planfile::Saved>,
) -> Result<ExitCode, Error> {
    with_session(target, operation, async |session| {
        let mut scope = session.loaded.scope.clone();
        let plan: Plan = plan::plan(session, &mut scope, destroy).await?;
        if let Some(saved) = saved {
            saved.check(target, session, &plan)?;
        }
        if !ui.json {
            ui.result(&plan::render::render(&plan, &session.loaded.registry));
        }
        if !plan.has_changes() {
            if plan.destroy {
                return Ok(ExitCode::SUCCESS);
            }
            let outcome = crate::apply::apply(session, &plan, scope, 1, ui).await?;
            print_outputs(ui, &outcome.outputs);
            return run_checks(session, &outcome.scope, ui).await;
        }
        let question = if destroy {
            format!("Do you really want to destroy all resources of the environment `{}`?", plan.env)
        } else {
            "Do you want to perform these actions?".to_owned()
        };
        if !confirm(ui, &question, auto_approve)? {
            return Err(Error::Refused(format!("{operation} cancelled")));
        }
        if crate::interrupt::requested() {
            return Err(Error::Refused(format!("{operation} interrupted before any change")));
        }
        let outcome = crate::apply::apply(session, &plan, scope, parallelism, ui).await?;
        let (add, change, destroyed) = outcome.counts;
        if destroy {
            ui.result(&format!("\nDestroy complete! Resources: {destroyed} destroyed.\n"));
        } else {
            ui.result(&format!(
                "\nApply complete! Resources: {add} added, {change} changed, {destroyed} destroyed.\n"
            ));
            print_outputs(ui, &outcome.outputs);
            return run_checks(session, &outcome.scope, ui).await;
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Runs the file's `check` blocks; a failed check fails the command.
async fn run_checks(
    session: &Session,
    scope: &crate::config::eval::Scope,
    ui: &Ui,
) -> Result<ExitCode, Error> {
    let config = &session.loaded.config;
    if config.checks.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let specs = crate::checks::evaluate(config, scope)?;
    let progress = |line: &str| ui.status(line);
    let results = crate::checks::run(specs, &progress).await;
    let mut failed = 0;
    for r in &results {
        match &r.outcome {
            Ok(attempts) => ui.status(&format!(
                "check.{}: passed ({} → {}, {attempts} attempt{})",
                r.spec.name,
                r.spec.url,
                r.spec.expect_status,
                if *attempts == 1 { "" } else { "s" }
            )),
            Err(message) => {
                failed += 1;
                ui.error(&format!("check.{}: {message}", r.spec.name));
            }
        }
    }
    if failed > 0 {
        return Err(Error::Refused(format!(
            "{failed} of {} check(s) failed",
            results.len()
        )));
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_check(cli: &Cli, vars: &super::VarArgs) -> Result<ExitCode, Error> {
    let target = cli.target(vars);
    let ui = cli.ui(false);
    with_session(&target, "check", async |session| {
        let mut scope = session.loaded.scope.clone();
        plan::plan(session, &mut scope, false).await?;
        run_checks(session, &scope, &ui).await
    })
    .await
}

fn print_outputs(ui: &Ui, outputs: &std::collections::BTreeMap<String, berth_state::OutputRecord>) {
    if outputs.is_empty() {
        return;
    }
    let mut text = String::from("\nOutputs:\n\n");
    for (name, o) in outputs {
        let value = match &o.value {
            Some(v) if !o.sensitive => crate::plan::render::value(v, 0),
            _ => "<sensitive>".to_owned(),
        };
        text.push_str(&format!("{name} = {value}\n"));
    }
    ui.result(&text);
}

/// Reads the state with the lock held briefly.
async fn read_state(target: &Target, operation: &str) -> Result<berth_state::Snapshot, Error> {
    let backend = session::open_backend(target, &session::target_backend(target)?).await?;
    let info = berth_state::LockInfo::new(operation, &backend.describe());
    backend.lock(&info).await?;
    let snapshot = backend.read().await;
    backend.unlock(&info.id).await?;
    Ok(snapshot?)
}

async fn cmd_show(cli: &Cli, args: &ShowArgs) -> Result<ExitCode, Error> {
    if let Some(path) = &args.plan_file {
        let saved = planfile::read(path)?;
        if args.json {
            println!("{}", saved.json);
        } else {
            print!("{}", saved.text);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let target = cli.target(&Default::default());
    let snapshot = read_state(&target, "show").await?;
    if args.json {
        let value = serde_json::to_value(&snapshot).map_err(|e| Error::Refused(e.to_string()))?;
        println!("{value}");
        return Ok(ExitCode::SUCCESS);
    }
    if snapshot.resources.is_empty() {
        println!("The state of `{}` is empty.", target.env);
    }
    for (address, record) in &snapshot.resources {
        println!("{}", show_record(address, record));
    }
    Ok(ExitCode::SUCCESS)
}

fn show_record(address: &str, record: &berth_state::ResourceRecord) -> String {
    let (type_name, name) = address.split_once('.').unwrap_or((address, ""));
    let mut out = format!("# {address}:\nresource \"{type_name}\" \"{name}\" {{\n");
    let width = record.attrs.keys().map(|k| k.len()).max().unwrap_or(0);
    for (k, v) in &record.attrs {
        let shown = if record.sensitive.contains(k) {
            "(sensitive value)".to_owned()
        } else {
            crate::plan::render::value(v, 0)
        };
        out.push_str(&format!("    {k:width$} = {shown}\n"));
    }
    out.push_str("}\n");
    out
}

async fn cmd_output(cli: &Cli, args: &OutputArgs) -> Result<ExitCode, Error> {
    let target = cli.target(&Default::default());
    let snapshot = read_state(&target, "output").await?;
    let show = |o: &berth_state::OutputRecord| -> String {
        match (&o.value, o.sensitive) {
            (Some(v), false) if args.json => v.to_string(),
            (Some(serde_json::Value::String(s)), false) if args.raw => s.clone(),
            (Some(v), false) => crate::plan::render::value(v, 0),
            _ if args.json => "null".to_owned(),
            _ => "<sensitive>".to_owned(),
        }
    };
    match &args.name {
        Some(name) => {
            let Some(o) = snapshot.outputs.get(name) else {
                return Err(Error::Refused(format!(
                    "output `{name}` not found in the state of `{}`; run `berth apply` first",
                    target.env
                )));
            };
            if o.sensitive && !args.json {
                return Err(Error::Refused(format!(
                    "output `{name}` is sensitive; berth does not store its value"
                )));
            }
            println!("{}", show(o));
        }
        None if args.json => {
            let map: serde_json::Map<String, serde_json::Value> = snapshot
                .outputs
                .iter()
                .map(|(k, o)| {
                    (
                        k.clone(),
                        serde_json::json!({ "sensitive": o.sensitive, "value": if o.sensitive { serde_json::Value::Null } else { o.value.clone().unwrap_or_default() } }),
                    )
                })
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
        None => {
            for (name, o) in &snapshot.outputs {
                println!("{name} = {}", show(o));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_state(cli: &Cli, cmd: &StateCommand) -> Result<ExitCode, Error> {
    let target = cli.target(&Default::default());
    match cmd {
        StateCommand::List => {
            let snapshot = read_state(&target, "state list").await?;
            for address in snapshot.resources.keys() {
                println!("{address}");
            }
        }
        StateCommand::Show { address } => {
            let snapshot = read_state(&target, "state show").await?;
            let Some(record) = snapshot.resources.get(address) else {
                return Err(Error::Refused(format!(
                    "no resource `{address}` in the state of `{}`",
                    target.env
                )));
            };
            print!("{}", show_record(address, record));
        }
        StateCommand::Pull => {
            let snapshot = read_state(&target, "state pull").await?;
            let document = serde_json::json!({
                "version": 1,
                "lineage": snapshot.lineage,
                "serial": snapshot.serial,
                "resources": snapshot.resources,
                "outputs": snapshot.outputs,
            });
            let text = serde_json::to_string_pretty(&document)
                .map_err(|e| Error::Refused(e.to_string()))?;
            println!("{text}");
        }
        StateCommand::Push {
            document: file,
            force,
        } => {
            let io = |e: std::io::Error| Error::Io {
                path: file.display().to_string(),
                message: e.to_string(),
            };
            let bytes = if file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map_err(io)?;
                buf
            } else {
                std::fs::read(file).map_err(io)?
            };
            let incoming: berth_state::Snapshot =
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .filter(|v| v.get("version") == Some(&serde_json::json!(1)))
                    .and_then(|v| serde_json::from_value(v).ok())
                    .ok_or_else(|| Error::Io {
                        path: file.display().to_string(),
                        message:
                            "not a berth state document (version 1) as `berth state pull` writes"
                                .to_owned(),
                    })?;
            let backend =
                session::open_backend(&target, &session::target_backend(&target)?).await?;
            let info = berth_state::LockInfo::new("state push", &backend.describe());
            backend.lock(&info).await?;
            let result = async {
                let current = backend.read().await?;
                if !force && !current.resources.is_empty() && current.lineage != incoming.lineage {
                    return Err(Error::Refused(format!(
                        "the document's lineage `{}` differs from the state's `{}`; pass --force to replace it anyway",
                        incoming.lineage, current.lineage
                    )));
                }
                if !force && incoming.serial < current.serial {
                    return Err(Error::Refused(format!(
                        "the document's serial {} is older than the state's {}; pass --force to replace it anyway",
                        incoming.serial, current.serial
                    )));
                }
                Ok(backend.replace_all(&incoming).await?)
            }
            .await;
            backend.unlock(&info.id).await?;
            let serial = result?;
            println!(
                "Pushed {} resources to `{}` (serial {serial}).",
                incoming.resources.len(),
                target.env
            );
        }
        StateCommand::Rm { address } => {
            let backend =
                session::open_backend(&target, &session::target_backend(&target)?).await?;
            let info = berth_state::LockInfo::new("state rm", &backend.describe());
            backend.lock(&info).await?;
            let result = async {
                let snapshot = backend.read().await?;
                if !snapshot.resources.contains_key(address) {
                    return Err(Error::Refused(format!(
                        "no resource `{address}` in the state of `{}`",
                        target.env
                    )));
                }
                backend.remove_resource(address).await?;
                Ok(())
            }
            .await;
            backend.unlock(&info.id).await?;
            result?;
            println!("Removed {address} from state; the object itself was left alone.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_fmt(cli: &Cli, args: &FmtArgs) -> Result<ExitCode, Error> {
    let io = |e: std::io::Error| Error::Io {
        path: cli.file.display().to_string(),
        message: e.to_string(),
    };
    let text = std::fs::read_to_string(&cli.file).map_err(io)?;
    let formatted = crate::fmt::format_source(&text).map_err(|e| {
        let source = std::sync::Arc::new(crate::diag::SourceFile {
            name: cli.file.display().to_string(),
            text: text.clone(),
        });
        let crate::fmt::FmtError::Parse {
            line,
            column,
            message,
        } = &e;
        let offset = offset_of(&text, *line, *column);
        Error::Config(
            crate::diag::Diagnostic::error(&source, offset..offset + 1, "syntax error")
                .with_label(message.clone())
                .into(),
        )
    })?;
    if formatted == text {
        return Ok(ExitCode::SUCCESS);
    }
    if args.check {
        println!("{}", cli.file.display());
        return Ok(ExitCode::from(3));
    }
    std::fs::write(&cli.file, formatted).map_err(io)?;
    println!("{}", cli.file.display());
    Ok(ExitCode::SUCCESS)
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return offset
                + l.char_indices()
                    .nth(column.saturating_sub(1))
                    .map(|(b, _)| b)
                    .unwrap_or(0);
        }
        offset += l.len();
    }
    text.len().saturating_sub(1)
}

fn cmd_graph(cli: &Cli) -> Result<ExitCode, Error> {
    let target = cli.target(&Default::default());
    let loaded = load(&target)?;
    print!("{}", loaded.graph.to_dot());
    Ok(ExitCode::SUCCESS)
}

async fn cmd_force_unlock(cli: &Cli, id: &str) -> Result<ExitCode, Error> {
    let target = cli.target(&Default::default());
    let backend = session::open_backend(&target, &session::target_backend(&target)?).await?;
    backend.force_unlock(id).await?;
    println!("The lock `{id}` of `{}` was removed.", target.env);
    Ok(ExitCode::SUCCESS)
}

/// GitLab's MR widget report: a replace counts as one create and one delete,
/// as GitLab's own jq filter counts `resource_changes[].change.actions`.
fn write_gitlab_report(path: &std::path::Path, plan: &Plan) -> Result<(), Error> {
    use crate::plan::Action;
    let count = |f: fn(Action) -> bool| plan.changes.iter().filter(|c| f(c.action)).count();
    let report = serde_json::json!({
        "create": count(|a| matches!(a, Action::Create | Action::Replace)),
        "update": count(|a| a == Action::Update),
        "delete": count(|a| matches!(a, Action::Delete | Action::Replace)),
    });
    std::fs::write(path, format!("{report}\n")).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

async fn cmd_env_list(cli: &Cli) -> Result<ExitCode, Error> {
    let target = cli.target(&Default::default());
    let choice = session::target_backend(&target)?;
    let envs = berth_state::list_envs(&choice.kind, &choice.settings, &target.state_dir()).await?;
    if envs.is_empty() {
        println!("No environments in the `{}` backend.", choice.kind);
    }
    for env in envs {
        let mut t = target.clone();
        t.env = env.clone();
        match read_state(&t, "env list").await {
            Ok(snapshot) => println!("{env}\t{} resources", snapshot.resources.len()),
            Err(Error::State(berth_state::StateError::Locked { holder, .. })) => {
                println!("{env}\tlocked by {} ({})", holder.who, holder.operation)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn cmd_init(cli: &Cli, args: &super::InitArgs) -> Result<ExitCode, Error> {
    let target = cli.target(&args.vars);
    let to = session::target_backend(&target)?;
    if !args.migrate_state {
        println!("berth is ready: state lives in the `{}` backend.", to.kind);
        return Ok(ExitCode::SUCCESS);
    }
    let mut from_target = target.clone();
    from_target.backend_config = Vec::new();
    let mut from = session::BackendChoice {
        kind: args.from_backend.clone(),
        settings: Default::default(),
    };
    for raw in &args.from_backend_config {
        let Some((k, v)) = raw.split_once('=') else {
            return Err(Error::Refused(format!(
                "`--from-backend-config {raw}` must be KEY=VALUE"
            )));
        };
        from.settings.insert(k.to_owned(), v.to_owned());
    }
    if from == to {
        return Err(Error::Refused(
            "the source and target backends are the same".to_owned(),
        ));
    }
    let envs = match berth_state::list_envs(&from.kind, &from.settings, &target.state_dir()).await {
        Ok(envs) => envs,
        // A backend that cannot list (http) migrates the selected environment.
        Err(_) => vec![target.env.clone()],
    };
    for env in envs {
        let mut source_target = from_target.clone();
        source_target.env = env.clone();
        let mut dest_target = target.clone();
        dest_target.env = env.clone();
        let source = session::open_backend(&source_target, &from).await?;
        let dest = session::open_backend(&dest_target, &to).await?;
        let source_lock = berth_state::LockInfo::new("init -migrate-state", &source.describe());
        source.lock(&source_lock).await?;
        let dest_lock = berth_state::LockInfo::new("init -migrate-state", &dest.describe());
        if let Err(e) = dest.lock(&dest_lock).await {
            let _ = source.unlock(&source_lock.id).await;
            return Err(e.into());
        }
        let result = async {
            let snapshot = source.read().await?;
            let existing = dest.read().await?;
            if !existing.resources.is_empty() && existing.lineage != snapshot.lineage {
                return Err(Error::Refused(format!(
                    "environment `{env}` already has a different state in the `{}` backend; not overwriting it",
                    to.kind
                )));
            }
            dest.replace_all(&snapshot).await?;
            let written = dest.read().await?;
            if written.lineage != snapshot.lineage || written.resources != snapshot.resources || written.outputs != snapshot.outputs {
                return Err(Error::Refused(format!("environment `{env}`: the copy does not read back the same; the source is untouched")));
            }
            Ok(snapshot.resources.len())
        }
        .await;
        let _ = dest.unlock(&dest_lock.id).await;
        let _ = source.unlock(&source_lock.id).await;
        let count = result?;
        println!(
            "Migrated `{env}`: {count} resources from `{}` to `{}`.",
            from.kind, to.kind
        );
    }
    Ok(ExitCode::SUCCESS)
}
