//! `chatbench agent`: runs the client engine on behalf of a coordinator (`chatbench run
//! --agents HOST:PORT,…`). Prints its bound address as the first stdout line, like `serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use chatbench_loadgen::agent::{self, AgentOptions};
use chatbench_loadgen::control::AllowList;

use super::UsageError;

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to listen on for a coordinator; port 0 picks a free port (printed on stdout).
    /// Every address needs a token (--token-file or CHATBENCH_AGENT_TOKEN); loopback without
    /// one only with --allow-unauthenticated-loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// File holding the shared secret a coordinator must present (its --agent-token-file).
    /// Without it, the CHATBENCH_AGENT_TOKEN environment variable is the token, if set.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Accept coordinators without a token on a loopback --listen address. Any local user can
    /// then use this agent to send traffic to its allowed targets.
    #[arg(long)]
    allow_unauthenticated_loopback: bool,
    /// Targets this agent may load, as CIDRs, addresses or host names separated by commas,
    /// e.g. 10.0.0.0/8,chat.example.internal. Default: loopback only (127.0.0.0/8, ::1).
    #[arg(long, value_name = "CIDR/HOST,...")]
    allow_target: Option<String>,
    /// Serve one coordinator session, then exit (how a coordinator starts local agents).
    #[arg(long)]
    once: bool,
}

pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(p) => Some(agent::read_token(p).map_err(|e| UsageError(e.to_string()))?),
        None => match std::env::var(agent::TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            Ok(_) => {
                return Err(UsageError(format!(
                    "{} is set but empty; put a random secret in it (e.g. `openssl rand -hex 32`)",
                    agent::TOKEN_ENV
                ))
                .into())
            }
            Err(_) => None,
        },
    };
    let allow = match &args.allow_target {
        Some(list) => AllowList::parse(list).map_err(UsageError)?,
        None => AllowList::loopback(),
    };
    let opts = AgentOptions {
        listen: args.listen,
        token,
        allow,
        once: args.once,
        allow_unauthenticated_loopback: args.allow_unauthenticated_loopback,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listener = agent::bind(&opts).await.map_err(|e| match e {
            agent::AgentError::NeedsToken(_) | agent::AgentError::LoopbackNeedsToken(_) => {
                anyhow::Error::new(UsageError(e.to_string()))
            }
            e => anyhow::Error::new(e),
        })?;
        let addr = listener.local_addr().context("reading the bound address")?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{addr} agent pid={}", std::process::id())?;
            out.flush()?;
        }
        eprintln!(
            "chatbench agent: listening on {addr}; targets allowed: {}",
            opts.allow.describe()
        );
        agent::serve(listener, opts).await;
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}
