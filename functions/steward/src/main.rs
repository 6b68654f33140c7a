//! `steward`: the operator CLI and the all-in-one local server of the embedded default.

mod campaigns;
mod cli;
mod demo;
mod idp;
mod login;
mod people;
mod report;
mod server;
mod shadow;
mod tokens;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "steward",
    version,
    about = "Lifecycle governance for AI-agent identities"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
pub struct Client {
    /// Base URL of a running `steward serve`.
    #[arg(
        long,
        env = "STEWARD_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Data directory of that server (the admin token is read from it).
    #[arg(
        long,
        env = "STEWARD_DATA_DIR",
        default_value = ".steward",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Admin bearer token; read from DATA_DIR/admin-token when absent.
    #[arg(long, env = "STEWARD_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Print raw JSON.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the local server: admin API, token endpoint, worker and timers in one process.
    Serve(server_args::ServeArgs),
    /// Agent identities: request, list, show, change scopes.
    Agents {
        #[command(subcommand)]
        command: cli::AgentsCmd,
        #[command(flatten)]
        client: Client,
    },
    /// Access-review campaigns: launch, progress, answer items, evidence report.
    Campaigns {
        #[command(subcommand)]
        command: campaigns::CampaignsCmd,
        #[command(flatten)]
        client: Client,
    },
    /// Shadow agents: IdP clients nobody registered; discover, claim, release.
    Shadow {
        #[command(subcommand)]
        command: shadow::ShadowCmd,
        #[command(flatten)]
        client: Client,
    },
    /// Pending approvals: list, approve, deny.
    Approvals {
        #[command(subcommand)]
        command: cli::ApprovalsCmd,
        #[command(flatten)]
        client: Client,
    },
    /// Posture: a risk score per agent, the zero-trust checklist and the maturity level.
    Report {
        #[command(flatten)]
        args: report::ReportArgs,
        #[command(flatten)]
        client: Client,
    },
    /// Export the audit trail as OCSF-shaped JSON lines, or verify it (`audit verify`).
    Audit {
        #[command(subcommand)]
        command: Option<cli::AuditCmd>,
        #[command(flatten)]
        client: Client,
    },
    /// Check agent manifests against the policy without changing anything (exit 1 on problems).
    Validate {
        #[arg(long, env = "STEWARD_POLICY", default_value = "policy.example.toml")]
        policy: PathBuf,
        /// Also check owners against this people file.
        #[arg(long)]
        people: Option<PathBuf>,
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
    },
    /// The seeds' story end to end in a temporary directory, printed as a timeline.
    Demo,
    /// Sign in as yourself at the organisation's issuer (device authorization grant).
    Login(login::LoginArgs),
    /// Forget the signed-in session (the CLI uses the admin token again).
    Logout,
    /// Personal API tokens for your scripts: create, list, revoke (after `steward login`).
    Tokens {
        #[command(subcommand)]
        command: tokens::TokensCmd,
        #[command(flatten)]
        client: Client,
    },
    /// People of the embedded default's directory: set the password they sign in with at the
    /// development IdP.
    People {
        #[command(subcommand)]
        command: people::PeopleCmd,
    },
    /// The embedded default's development IdP: rotate its signing key.
    Idp {
        #[command(subcommand)]
        command: idp::IdpCmd,
    },
    /// Who the server takes you to be.
    Whoami {
        #[command(flatten)]
        client: Client,
    },
}

mod server_args {
    use super::periods::Every;
    use std::path::PathBuf;
    use std::time::Duration;

    #[derive(clap::Args)]
    pub struct ServeArgs {
        #[arg(long, env = "STEWARD_DATA_DIR", default_value = ".steward")]
        pub data_dir: PathBuf,
        #[arg(long, env = "STEWARD_POLICY", default_value = "policy.example.toml")]
        pub policy: PathBuf,
        /// People file (TOML) used as the directory of owners and approvers.
        #[arg(long, env = "STEWARD_PEOPLE", default_value = "people.example.toml")]
        pub people: PathBuf,
        /// Address to listen on. Loopback by default; exposing it needs a TLS proxy in front.
        #[arg(long, env = "STEWARD_LISTEN", default_value = "127.0.0.1:8080")]
        pub listen: String,
        /// `fsync` (every commit fsynced; survives power loss) or `wal` (survives a process crash).
        #[arg(long, env = "STEWARD_DURABILITY", default_value = "fsync")]
        pub durability: String,
        /// How often due timers are turned into events (a positive duration).
        #[arg(long, env = "STEWARD_TICK", default_value = "1s", value_parser = super::periods::tick)]
        pub tick: Duration,
        /// How often the Okta System Log is read (when STEWARD_OKTA_ORG_URL is set), or `off`.
        #[arg(
            long,
            env = "STEWARD_OKTA_LOG_POLL",
            default_value = "60s",
            value_parser = super::periods::okta_log_poll
        )]
        pub okta_log_poll: Every,
        /// How often the rotation and expiry sweep runs (also once at start-up), or `off`
        /// (POST /api/sweep still runs one).
        #[arg(long, env = "STEWARD_SWEEP", default_value = "1h", value_parser = super::periods::sweep)]
        pub sweep: Every,
        /// A proxy (address or CIDR range) whose `X-Forwarded-For` names the caller, e.g. the
        /// TLS proxy on this host: `--trusted-proxy 127.0.0.1`. Repeat, or separate with commas
        /// in the variable. None by default: the connection's peer is the caller.
        #[arg(
            long = "trusted-proxy",
            env = "STEWARD_TRUSTED_PROXIES",
            value_delimiter = ',',
            value_parser = trusted_proxy
        )]
        pub trusted_proxies: Vec<ipnet::IpNet>,
        /// The URL agents and people reach this server at, e.g. `https://steward.example.com`
        /// behind a TLS proxy: the issuer (`iss`) of the development IdP's tokens and the base
        /// of the URLs its discovery document names. Default `http://<listen address>`, which
        /// only a loopback or single-address listener can use: listening on every interface
        /// (`0.0.0.0`, `[::]`) needs it.
        #[arg(long, env = "STEWARD_PUBLIC_URL", value_parser = public_url)]
        pub public_url: Option<String>,
        /// Address of the mTLS listener (RFC 8705), where `tls_client_auth` agents present the
        /// client certificate the internal CA issued them and get certificate-bound tokens: the
        /// development IdP's token and introspection endpoints over TLS, its server certificate
        /// issued by the same CA (`GET /ca/certificate`). Default: 127.0.0.1 on the --listen
        /// port + 1. `off` turns it off. Agents must reach it directly: a proxy that ends TLS
        /// takes the client certificate away.
        #[arg(long, env = "STEWARD_MTLS_LISTEN", value_parser = mtls_listen)]
        pub mtls_listen: Option<MtlsListen>,
    }

    /// `--mtls-listen`: an address, or `off`.
    #[derive(Debug, Clone, PartialEq)]
    pub enum MtlsListen {
        Off,
        At(String),
    }

    fn mtls_listen(s: &str) -> Result<MtlsListen, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(MtlsListen::Off);
        }
        if s.is_empty() {
            return Err(
                "--mtls-listen (STEWARD_MTLS_LISTEN): give an address such as 127.0.0.1:8081, or `off`".into(),
            );
        }
        Ok(MtlsListen::At(s.to_string()))
    }

    /// An http(s) URL with nothing after the host and port (a trailing `/` is dropped).
    fn public_url(s: &str) -> Result<String, String> {
        let s = s.trim().trim_end_matches('/');
        let url = reqwest::Url::parse(s)
            .map_err(|e| format!("--public-url (STEWARD_PUBLIC_URL): `{s}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "https" | "http")
            || url.host_str().is_none()
            || url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(format!(
                "--public-url (STEWARD_PUBLIC_URL): `{s}` must be https://host[:port] (or http://), with no path, query or user"
            ));
        }
        Ok(s.to_string())
    }

    /// An address (a range of one) or a CIDR range.
    fn trusted_proxy(s: &str) -> Result<ipnet::IpNet, String> {
        let s = s.trim();
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                format!(
                    "--trusted-proxy (STEWARD_TRUSTED_PROXIES): `{s}` is not an IP address or CIDR range"
                )
            })
    }
}

/// The periods of `serve`'s background jobs, checked when the flags (or their env vars) are
/// read: a zero period panics tokio's interval inside the running server, and a huge one
/// overflows the clock at the first tick.
mod periods {
    use std::time::Duration;

    /// A periodic job's period, or `None` when it is turned off.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Every(pub Option<Duration>);

    impl std::fmt::Display for Every {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {
                Some(d) => write!(f, "every {}", humantime::format_duration(d)),
                None => f.write_str("off"),
            }
        }
    }

    /// Timers have millisecond resolution: anything shorter would only spin.
    const SHORTEST: Duration = Duration::from_millis(1);
    /// Longer is a typo rather than a schedule (`off` says "never"), and stays far from the
    /// clock's overflow.
    const LONGEST: Duration = Duration::from_secs(366 * 24 * 3600);

    pub fn tick(s: &str) -> Result<Duration, String> {
        let what = "--tick (STEWARD_TICK) must be a positive duration such as 1s or 500ms";
        if is_off(s) {
            return Err(format!(
                "{what}; it cannot be `off`: due timers (approval expiry) would never fire"
            ));
        }
        period(s).map_err(|why| match why {
            Bad::Zero => format!("{what}; {} would never fire timers", s.trim()),
            other => format!("{what}; {}", other.explain(s)),
        })
    }

    pub fn sweep(s: &str) -> Result<Every, String> {
        or_off(
            s,
            "--sweep (STEWARD_SWEEP) must be a positive duration such as 1h or 30m, or `off` \
             (no periodic sweep; POST /api/sweep still runs one)",
        )
    }

    pub fn okta_log_poll(s: &str) -> Result<Every, String> {
        or_off(
            s,
            "--okta-log-poll (STEWARD_OKTA_LOG_POLL) must be a positive duration such as 60s \
             or 5m, or `off` (the Okta System Log is not read)",
        )
    }

    fn or_off(s: &str, what: &str) -> Result<Every, String> {
        if is_off(s) {
            return Ok(Every(None));
        }
        period(s)
            .map(|d| Every(Some(d)))
            .map_err(|why| format!("{what}; {}", why.explain(s)))
    }

    fn is_off(s: &str) -> bool {
        s.trim().eq_ignore_ascii_case("off")
    }

    enum Bad {
        NotADuration(humantime::DurationError),
        Zero,
        TooShort,
        TooLong,
    }

    impl Bad {
        fn explain(&self, s: &str) -> String {
            let s = s.trim();
            match self {
                Bad::NotADuration(e) => format!("`{s}` is not a duration ({e})"),
                Bad::Zero => format!("{s} is not a period"),
                Bad::TooShort => format!("{s} is shorter than 1ms, the timers' resolution"),
                Bad::TooLong => format!("{s} is longer than a year"),
            }
        }
    }

    fn period(s: &str) -> Result<Duration, Bad> {
        let d = humantime::parse_duration(s.trim()).map_err(Bad::NotADuration)?;
        if d.is_zero() {
            Err(Bad::Zero)
        } else if d < SHORTEST {
            Err(Bad::TooShort)
        } else if d > LONGEST {
            Err(Bad::TooLong)
        } else {
            Ok(d)
        }
    }
}

/// Exits 1 with the error (and its causes) on stderr, each line made safe for a terminal: a
/// refusal's reasons come from the server and may quote what someone else typed.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", cli::shown_lines(&format!("{e:?}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // The demo prints its own timeline; the server's notices would interleave with it.
    let default_filter = if matches!(args.command, Cmd::Demo) {
        "error"
    } else {
        "steward=info,shared=info,warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEWARD_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match args.command {
            Cmd::Serve(a) => serve(a).await,
            Cmd::Agents { command, client } => cli::agents(command, &client).await,
            Cmd::Approvals { command, client } => cli::approvals(command, &client).await,
            Cmd::Shadow { command, client } => shadow::shadow(command, &client).await,
            Cmd::Campaigns { command, client } => campaigns::campaigns(command, &client).await,
            Cmd::Report { args, client } => report::report(args, &client).await,
            Cmd::Audit { command, client } => cli::audit(command, &client).await,
            Cmd::Validate {
                policy,
                people,
                manifests,
            } => cli::validate(&policy, people.as_deref(), &manifests).await,
            Cmd::Demo => demo::run().await,
            Cmd::Login(a) => login::login(a).await,
            Cmd::Logout => login::logout(),
            Cmd::People { command } => people::people(command).await,
            Cmd::Idp { command } => idp::idp(command),
            Cmd::Tokens { command, client } => tokens::tokens(command, &client).await,
            Cmd::Whoami { client } => cli::whoami(&client).await,
        }
    })
}

pub fn durability(s: &str) -> anyhow::Result<shared::embedded::Durability> {
    match s {
        "fsync" => Ok(shared::embedded::Durability::Fsync),
        "wal" => Ok(shared::embedded::Durability::Wal),
        other => anyhow::bail!("--durability must be `fsync` or `wal`, not `{other}`"),
    }
}

async fn serve(a: server_args::ServeArgs) -> anyhow::Result<()> {
    let policy = shared::policy_file::load(&a.policy)?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let addr = listener.local_addr()?;
    let public_url = match &a.public_url {
        Some(url) => url.clone(),
        None if addr.ip().is_unspecified() => anyhow::bail!(
            "listening on every interface ({addr}) needs --public-url (STEWARD_PUBLIC_URL): the URL agents reach this server at is the issuer of the development IdP's tokens, and http://{addr} is no address a client can use"
        ),
        None => server::bound(addr),
    };
    let stack =
        shared::wiring::embedded::Embedded::open(shared::wiring::embedded::EmbeddedConfig {
            data_dir: a.data_dir.clone(),
            policy,
            people: a.people.clone(),
            issuer: public_url.clone(),
            durability: durability(&a.durability)?,
            engine: shared::EngineConfig::default(),
            slack: shared::slack::SlackSettings::from_env()?,
            okta: std::env::var_os(shared::idp::okta::ENV_ORG_URL)
                .map(|_| shared::idp::okta::OktaSettings::from_env())
                .transpose()?,
            okta_hook_secret: std::env::var("STEWARD_OKTA_HOOK_SECRET")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(shared::Secret::new),
            oauth: std::env::var_os(shared::idp::oauth::ISSUER_ENV)
                .map(|_| shared::idp::oauth::OAuthSettings::from_env())
                .transpose()?,
            ssf: shared::inbound::ssf::SsfSettings::from_env()?,
            okta_directory: match std::env::var("STEWARD_DIRECTORY").as_deref() {
                Err(_) | Ok("") | Ok("people-file") => false,
                Ok("okta") => true,
                Ok(other) => anyhow::bail!(
                    "STEWARD_DIRECTORY must be `people-file` (the default) or `okta`, not `{other}`"
                ),
            },
            people_issuer: shared::sign_in::IssuerSettings::from_env()?,
        })?;
    server::admin_token(&a.data_dir)?;
    let mtls_at = match &a.mtls_listen {
        Some(server_args::MtlsListen::Off) => None,
        Some(server_args::MtlsListen::At(at)) => Some(at.clone()),
        None => Some(server::mtls::default_address(addr).to_string()),
    };
    let mtls = match mtls_at {
        Some(at) => Some(tokio::net::TcpListener::bind(&at).await.with_context(|| {
            format!("binding the mTLS listener {at} (--mtls-listen; `off` turns it off)")
        })?),
        None => None,
    };
    eprintln!(
        "steward serving on {} (data {}, admin token in {}; approvals {})",
        server::bound(addr),
        a.data_dir.display(),
        a.data_dir.join("admin-token").display(),
        if stack.slack.is_some() {
            "in Slack, clicks at POST /slack/interactions"
        } else {
            "on the console: steward approvals approve|deny"
        }
    );
    eprintln!(
        "identity provider: {}; Okta event hook: {}",
        match &stack.okta {
            Some(o) => format!(
                "Okta {} (System Log read: {})",
                o.settings().org_url,
                a.okta_log_poll
            ),
            None if std::env::var_os(shared::idp::oauth::ISSUER_ENV).is_some() => format!(
                "the OAuth server {} (dynamic client registration)",
                std::env::var(shared::idp::oauth::ISSUER_ENV).unwrap_or_default()
            ),
            None => "the development IdP".into(),
        },
        if stack.okta_hook_secret.is_some() {
            "POST /hooks/okta"
        } else {
            "off (set STEWARD_OKTA_HOOK_SECRET)"
        }
    );
    if stack.ssf.is_some() {
        eprintln!("Shared Signals: SETs received at POST /ssf/events");
    }
    let people = stack.people_tokens.settings();
    if stack.people_at_dev_idp {
        eprintln!(
            "people sign in at the development IdP ({}; `steward login`), with a password set by `steward people password <email>`; the admin token is automation",
            people.issuer
        );
    } else {
        eprintln!(
            "people sign in with {} (audience {}, person claim {}); the admin token is automation",
            people.issuer, people.audience, people.person_claim
        );
    }
    if a.sweep.0.is_none() {
        eprintln!("periodic sweep: off (POST /api/sweep runs one)");
    }
    match &mtls {
        Some(l) => eprintln!(
            "mTLS listener (tls_client_auth, certificate-bound tokens): https://{}; CA certificate at {public_url}/ca/certificate, CRL at {public_url}/ca/crl",
            l.local_addr()?
        ),
        None => eprintln!("mTLS listener: off"),
    }
    let every = server::Schedule {
        tick: a.tick,
        okta_log: a.okta_log_poll.0,
        sweep: a.sweep.0,
    };
    let proxies = server::TrustedProxies(a.trusted_proxies.clone());
    server::serve_with(stack, listener, mtls, every, proxies, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use super::periods::Every;
    use super::*;
    use std::time::Duration;

    fn serve(args: &[&str]) -> Result<server_args::ServeArgs, String> {
        let argv = ["steward", "serve"].iter().chain(args);
        match Args::try_parse_from(argv) {
            Ok(Args {
                command: Cmd::Serve(a),
            }) => Ok(a),
            Ok(_) => unreachable!("parsed as serve"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn periods_default_and_off() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.tick, Duration::from_secs(1));
        assert_eq!(a.sweep, Every(Some(Duration::from_secs(3600))));
        assert_eq!(a.okta_log_poll, Every(Some(Duration::from_secs(60))));
        let a = serve(&[
            "--sweep",
            "off",
            "--okta-log-poll",
            "off",
            "--tick",
            "250ms",
        ])
        .unwrap();
        assert_eq!(a.tick, Duration::from_millis(250));
        assert_eq!(a.sweep, Every(None));
        assert_eq!(a.okta_log_poll, Every(None));
    }

    #[test]
    fn the_mtls_listener_is_on_beside_the_main_port_unless_off() {
        use server_args::MtlsListen;
        assert_eq!(serve(&[]).unwrap().mtls_listen, None);
        assert_eq!(
            serve(&["--mtls-listen", "off"]).unwrap().mtls_listen,
            Some(MtlsListen::Off)
        );
        assert_eq!(
            serve(&["--mtls-listen", "127.0.0.1:9443"])
                .unwrap()
                .mtls_listen,
            Some(MtlsListen::At("127.0.0.1:9443".into()))
        );
        assert!(serve(&["--mtls-listen", " "]).is_err());
        let at = |s: &str| server::mtls::default_address(s.parse().unwrap()).to_string();
        assert_eq!(at("127.0.0.1:8080"), "127.0.0.1:8081");
        assert_eq!(at("0.0.0.0:8080"), "127.0.0.1:8081");
        assert_eq!(at("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(at("127.0.0.1:65535"), "127.0.0.1:0");
    }

    #[test]
    fn zero_and_nonsense_periods_are_refused_with_what_is_allowed() {
        for (args, needle) in [
            (
                ["--tick", "0s"],
                "--tick (STEWARD_TICK) must be a positive duration such as 1s or 500ms; 0s would never fire timers",
            ),
            (["--tick", "0"], "0 would never fire timers"),
            (
                ["--tick", "off"],
                "cannot be `off`: due timers (approval expiry) would never fire",
            ),
            (["--tick", "10us"], "10us is shorter than 1ms"),
            (
                ["--sweep", "0s"],
                "--sweep (STEWARD_SWEEP) must be a positive duration such as 1h or 30m, or `off`",
            ),
            (["--sweep", "nonsense"], "`nonsense` is not a duration"),
            (["--sweep", "1000years"], "1000years is longer than a year"),
            (
                ["--okta-log-poll", "0ms"],
                "--okta-log-poll (STEWARD_OKTA_LOG_POLL) must be a positive duration",
            ),
        ] {
            let e = serve(&args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }
}
