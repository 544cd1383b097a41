//! `strata ruler` and the ruler inside `strata all`: Prometheus recording and alerting
//! rules over the global view (Thanos's ruler flags), results written back through the
//! ingest path, alerts sent to Alertmanager.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use strata_kit::http::{instrument, router, Readiness, Server, ServerState};
use strata_kit::metrics::Registry;
use strata_kit::parse_duration_ms;
use strata_kit::shutdown::Shutdown;
use strata_ruler::group::{Env, Manager, RuleSource};
use strata_ruler::metrics::RulerMetrics;
use strata_ruler::notifier::{parse_alertmanagers_config, Alertmanager, Notifier};
use strata_ruler::remote::{HttpQueryEngine, RemoteWriter};
use strata_ruler::{Appender, BoxFuture, Error, QueryEngine, Sample};
use strata_tsdb::labels::Labels;

strata_kit::http_args!(
    /// `strata ruler`: Thanos's ruler HTTP port.
    pub RulerHttpArgs, 10902
);

/// The rule flags, shared by `strata ruler` and `strata all`.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// Rule files to load, a path or a glob (repeatable). In `strata all` the ruler runs
    /// only when one is given.
    #[arg(long = "rule-file", value_name = "GLOB")]
    pub rule_files: Vec<String>,
    /// Rule files per tenant in Mimir's layout, `DIR/<tenant>/*.yml`, read at every
    /// (re)load.
    #[arg(long = "ruler-storage.local.directory", value_name = "DIR")]
    pub tenant_dir: Option<PathBuf>,
    /// Default evaluation interval of groups that set none.
    #[arg(long = "eval-interval", value_name = "DURATION", default_value = "1m", value_parser = parse_duration_ms)]
    pub eval_interval_ms: i64,
    /// Default query offset of groups that set none (`query_offset`).
    #[arg(long = "rule-query-offset", value_name = "DURATION", default_value = "0s", value_parser = parse_duration_ms)]
    pub query_offset_ms: i64,
    /// Alertmanager to send alerts to, e.g. `http://alertmanager:9093` (repeatable; the
    /// v2 API under its path).
    #[arg(long = "alertmanagers.url", value_name = "URL")]
    pub alertmanagers_urls: Vec<String>,
    /// Alertmanagers as Thanos's YAML (`alertmanagers: [{static_configs, scheme,
    /// path_prefix, timeout, api_version: v2}]`); added to `--alertmanagers.url`.
    #[arg(long = "alertmanagers.config-file", value_name = "FILE")]
    pub alertmanagers_config_file: Option<PathBuf>,
    /// Timeout of one request to an Alertmanager (retries included).
    #[arg(long = "alertmanagers.send-timeout", value_name = "DURATION", default_value = "10s", value_parser = parse_duration_ms)]
    pub alertmanagers_send_timeout_ms: i64,
    /// Alerts waiting to be sent at most; beyond it the oldest are dropped.
    #[arg(
        long = "alertmanager.notification-queue-capacity",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub queue_capacity: usize,
    /// Minimum time before an alert is sent again to Alertmanager.
    #[arg(long = "resend-delay", value_name = "DURATION", default_value = "1m", value_parser = parse_duration_ms)]
    pub resend_delay_ms: i64,
    /// Longest outage of the ruler after which `for` state is still restored.
    #[arg(long = "for-outage-tolerance", value_name = "DURATION", default_value = "1h", value_parser = parse_duration_ms)]
    pub for_outage_tolerance_ms: i64,
    /// Minimum time an alert whose `for` is at least this long waits after a restart
    /// before it fires.
    #[arg(long = "for-grace-period", value_name = "DURATION", default_value = "10m", value_parser = parse_duration_ms)]
    pub for_grace_period_ms: i64,
    /// Base of alerts' generator URL and of `$externalURL` (the querier's UI).
    #[arg(long = "alert.query-url", value_name = "URL", default_value = "")]
    pub alert_query_url: String,
}

/// `strata ruler`: Thanos's flag names.
#[derive(Debug, Args)]
pub struct RulerCmd {
    #[command(flatten)]
    http: RulerHttpArgs,
    #[command(flatten)]
    rules: RuleArgs,
    /// Querier to evaluate rules against, its Prometheus HTTP API base URL (repeatable;
    /// tried in order until one answers).
    #[arg(long = "query", value_name = "URL", required = true)]
    query: Vec<String>,
    /// Timeout of one rule query.
    #[arg(long = "query.timeout", value_name = "DURATION", default_value = "2m", value_parser = parse_duration_ms)]
    query_timeout_ms: i64,
    /// Where results (recording rules, ALERTS, ALERTS_FOR_STATE) are written: remote
    /// write 1.0, e.g. `http://ingester:10902/api/v1/push`. Without it nothing is
    /// written, and `for` state cannot be restored after a restart.
    #[arg(long = "remote-write.url", value_name = "URL")]
    remote_write_url: Option<String>,
    /// Tenant the `--rule-file` rules are evaluated for and written to (`X-Scope-OrgID`).
    #[arg(long = "tenant", value_name = "ID", default_value = strata_kit::tenant::DEFAULT_TENANT)]
    tenant: String,
    /// External label added to written series and alerts, `name="value"` (repeatable).
    #[arg(long = "label", value_name = "NAME=\"VALUE\"", value_parser = strata_kit::labels::parse_label)]
    labels: Vec<(String, String)>,
}

/// Writes nothing (no `--remote-write.url`).
struct Discard;

impl Appender for Discard {
    fn append<'a>(&'a self, _: &'a str, _: Vec<Sample>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

impl RuleArgs {
    fn alertmanagers(&self) -> anyhow::Result<Vec<Alertmanager>> {
        let timeout = Duration::from_millis(self.alertmanagers_send_timeout_ms.max(1) as u64);
        let mut out: Vec<Alertmanager> = self
            .alertmanagers_urls
            .iter()
            .map(|u| Alertmanager {
                url: u.trim_end_matches('/').to_string(),
                timeout,
            })
            .collect();
        if let Some(f) = &self.alertmanagers_config_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("--alertmanagers.config-file {}", f.display()))?;
            out.extend(parse_alertmanagers_config(&text).context("--alertmanagers.config-file")?);
        }
        Ok(out)
    }

    /// The manager over `engine` and `appender`, with its notifier (if any Alertmanager
    /// is configured) to run.
    fn manager(
        &self,
        tenant: &str,
        engine: Arc<dyn QueryEngine>,
        appender: Arc<dyn Appender>,
        external_labels: BTreeMap<String, String>,
        registry: &Registry,
    ) -> anyhow::Result<(Arc<Manager>, Option<Arc<Notifier>>)> {
        if self.eval_interval_ms <= 0 {
            anyhow::bail!("--eval-interval must be positive");
        }
        let metrics = RulerMetrics::new(registry);
        let ams = self.alertmanagers()?;
        let notifier = (!ams.is_empty()).then(|| {
            Notifier::new(
                ams,
                self.queue_capacity,
                external_labels.clone(),
                metrics.clone(),
            )
        });
        let env = Arc::new(Env {
            engine,
            appender,
            notifier: notifier.clone(),
            external_labels,
            external_url: self.alert_query_url.trim_end_matches('/').to_string(),
            resend_delay_ms: self.resend_delay_ms,
            outage_tolerance_ms: self.for_outage_tolerance_ms,
            for_grace_period_ms: self.for_grace_period_ms,
            metrics,
        });
        let sources = vec![RuleSource {
            tenant: tenant.to_string(),
            globs: self.rule_files.clone(),
        }];
        let m = Manager::new(
            env,
            sources,
            self.tenant_dir.clone(),
            self.eval_interval_ms,
            self.query_offset_ms,
        );
        Ok((m, notifier))
    }
}

/// Reload on SIGHUP until `shutdown`.
fn reload_on_sighup(m: Arc<Manager>, shutdown: Shutdown) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /-/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = shutdown.wait() => return,
            }
            match m.reload().await {
                Ok(()) => tracing::info!("reloaded rules"),
                Err(e) => {
                    tracing::error!(error = %e, "reloading rules failed; the previous rules keep running")
                }
            }
        }
    });
}

pub fn run_ruler(cmd: RulerCmd) -> anyhow::Result<ExitCode> {
    if cmd.rules.rule_files.is_empty() && cmd.rules.tenant_dir.is_none() {
        anyhow::bail!("no rules: give --rule-file (or --ruler-storage.local.directory)");
    }
    strata_kit::tenant::validate_tenant(&cmd.tenant).context("--tenant")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let registry = Registry::with_process_metrics();
        let shutdown = Shutdown::with_signals();
        let http = Server::bind(cmd.http.http_address).await?.with_grace_period(cmd.http.grace_period());
        let timeout = Duration::from_millis(cmd.query_timeout_ms.max(1) as u64);
        let engine: Arc<dyn QueryEngine> = Arc::new(HttpQueryEngine::new(cmd.query.clone(), timeout));
        let appender: Arc<dyn Appender> = match &cmd.remote_write_url {
            Some(u) => Arc::new(RemoteWriter::new(u.clone(), Duration::from_secs(30))),
            None => {
                tracing::warn!("no --remote-write.url: rule results are not written and `for` state is not restored after a restart");
                Arc::new(Discard)
            }
        };
        let external: BTreeMap<String, String> = cmd.labels.iter().cloned().collect();
        let (manager, notifier) = cmd.rules.manager(&cmd.tenant, engine, appender, external, &registry)?;
        manager.reload().await.context("loading rules")?;
        tracing::info!(queries = ?cmd.query, rule_files = ?cmd.rules.rule_files, "ruler started");
        let notifier_task = notifier.map(|n| tokio::spawn(n.run(shutdown.clone())));
        reload_on_sighup(manager.clone(), shutdown.clone());
        let readiness = Readiness::new();
        readiness.set_ready();
        let state = ServerState::new(&registry, readiness);
        let app = instrument(router(state.clone()).merge(strata_ruler::api::routes(manager.clone())), &state);
        let served = http.serve(app, shutdown.clone()).await;
        shutdown.trigger();
        manager.stop().await;
        if let Some(t) = notifier_task {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        served?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

// ---------------------------------------------------------------------------------
// Inside `strata all`

/// The querier's engine in process.
struct InProcess {
    querier: Arc<strata_querier::Querier>,
}

impl InProcess {
    /// Run `f` on one of the querier's query threads (the engine's stack, off the
    /// runtime's workers, which the fan-out blocks on), kept between queries rather
    /// than started for each rule.
    async fn on_query_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce(&strata_querier::Querier, tokio::runtime::Handle) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let q = self.querier.clone();
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.querier
            .run_on_query_thread(move || {
                let _ = tx.send(f(&q, handle));
            })
            .map_err(|e| Error::Query(format!("cannot start a query thread: {e}")))?;
        rx.await
            .map_err(|_| Error::Query("rule query ended without an answer".into()))
    }
}

impl QueryEngine for InProcess {
    fn instant<'a>(
        &'a self,
        tenant: &'a str,
        expr: &'a str,
        t: i64,
    ) -> BoxFuture<'a, Result<Vec<Sample>, Error>> {
        let (tenant, expr) = (tenant.to_string(), expr.to_string());
        Box::pin(async move {
            let r = self
                .on_query_thread(move |q, handle| {
                    let st = q.storage(q.default_fetch_options(&tenant), handle);
                    strata_promql::Engine::new(q.engine_options()).instant(&st, &expr, t)
                })
                .await?
                .map_err(|e| Error::Query(e.to_string()))?;
            strata_ruler::samples_from_value(r.value, t)
        })
    }

    /// From storage, stale markers included (a resolved alert is not restored).
    fn last_sample<'a>(
        &'a self,
        tenant: &'a str,
        labels: &'a Labels,
        mint: i64,
        maxt: i64,
    ) -> BoxFuture<'a, Result<Option<(i64, f64)>, Error>> {
        let (tenant, labels) = (tenant.to_string(), labels.clone());
        Box::pin(async move {
            self.on_query_thread(move |q, handle| {
                let st = q.storage(q.default_fetch_options(&tenant), handle);
                let matchers: Vec<_> = labels
                    .iter()
                    .map(|l| strata_tsdb::matcher::Matcher::equal(&*l.name, &*l.value))
                    .collect();
                let hints = strata_promql::SelectHints {
                    start: mint,
                    end: maxt,
                    ..Default::default()
                };
                let series = strata_promql::Storage::select(&st, &matchers, mint, maxt, &hints)
                    .map_err(|e| Error::Query(e.to_string()))?;
                Ok(series
                    .into_iter()
                    .find(|s| s.labels == labels)
                    .and_then(|s| {
                        s.samples
                            .into_iter()
                            .rfind(|(t, _)| *t <= maxt && *t > mint)
                    }))
            })
            .await?
        })
    }
}

/// The ruler inside `strata all`: `RuleArgs` plus the tenant.
#[derive(Debug, Clone, Args)]
pub struct AllRulerArgs {
    #[command(flatten)]
    rules: RuleArgs,
    /// Tenant the `--rule-file` rules are evaluated for and written to.
    #[arg(long = "ruler.tenant", value_name = "ID", default_value = strata_kit::tenant::DEFAULT_TENANT)]
    tenant: String,
}

/// Start the ruler in `strata all` when rules are given: queries through `querier` in
/// process, writes to this process's remote-write endpoint at `http_addr` once
/// `readiness` is ready (the ingester is on its ring). Returns a function that puts the
/// ruler's `/api/v1/rules`, `/api/v1/alerts` (in place of the querier's empty ones)
/// and `/-/reload` on the app.
pub fn start_in_all(
    args: AllRulerArgs,
    querier: Arc<strata_querier::Querier>,
    external_labels: Vec<(String, String)>,
    http_addr: std::net::SocketAddr,
    readiness: Readiness,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<Option<impl FnOnce(axum::Router) -> axum::Router>> {
    if args.rules.rule_files.is_empty() && args.rules.tenant_dir.is_none() {
        return Ok(None);
    }
    strata_kit::tenant::validate_tenant(&args.tenant).context("--ruler.tenant")?;
    let mut addr = http_addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let appender = Arc::new(RemoteWriter::new(
        format!("http://{addr}/api/v1/push"),
        Duration::from_secs(30),
    ));
    let engine = Arc::new(InProcess { querier });
    let (manager, notifier) = args.rules.manager(
        &args.tenant,
        engine,
        appender,
        external_labels.into_iter().collect(),
        registry,
    )?;
    // Refuse broken rule files at start, as `strata ruler` does.
    manager.load().context("loading rules")?;
    if let Some(n) = notifier {
        tokio::spawn(n.run(shutdown.clone()));
    }
    reload_on_sighup(manager.clone(), shutdown.clone());
    {
        let m = manager.clone();
        tokio::spawn(async move {
            while !readiness.is_ready() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.wait() => return,
                }
            }
            if let Err(e) = m.reload().await {
                tracing::error!(error = %e, "loading rules failed");
            }
            shutdown.wait().await;
            m.stop().await;
        });
    }
    let routes = strata_ruler::api::routes(manager);
    Ok(Some(move |app: axum::Router| override_routes(app, routes)))
}

/// `app` with the ruler's routes answering first: the querier's `/api/v1/rules` and
/// `/api/v1/alerts` (empty lists) are replaced rather than merged, which axum refuses.
fn override_routes(app: axum::Router, ruler: axum::Router) -> axum::Router {
    use axum::extract::Request;
    use axum::middleware::Next;
    use tower::ServiceExt as _;
    let layer = axum::middleware::from_fn(move |req: Request, next: Next| {
        let ruler = ruler.clone();
        async move {
            let p = req.uri().path();
            let ours = matches!(
                p,
                "/api/v1/rules"
                    | "/api/v1/alerts"
                    | "/prometheus/api/v1/rules"
                    | "/prometheus/api/v1/alerts"
                    | "/-/reload"
            );
            if ours {
                match ruler.oneshot(req).await {
                    Ok(r) => r,
                    Err(e) => match e {},
                }
            } else {
                next.run(req).await
            }
        }
    });
    app.layer(layer)
}

/// `strata tools rules`: as `promtool test rules`.
#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RulesCommand {
    /// Run rule unit-test files (promtool's format); exit 1 if one fails.
    Test {
        /// Unit-test files.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Comma-separated feature names to enable (repeatable; promtool's flag). Valid
        /// options: promql-delayed-name-removal. Unknown names are warned of and
        /// ignored.
        #[arg(long = "enable-feature", value_name = "FEATURE", value_delimiter = ',')]
        enable_feature: Vec<String>,
    },
}

pub fn run_rules_tool(args: &RulesArgs) -> anyhow::Result<ExitCode> {
    let RulesCommand::Test {
        files,
        enable_feature,
    } = &args.command;
    let opts = strata_promql::EngineOptions {
        delayed_name_removal: crate::querier::feature_enabled(
            enable_feature,
            "promql-delayed-name-removal",
        ),
        ..Default::default()
    };
    let mut failed = false;
    for f in files {
        println!("Unit Testing:  {}", f.display());
        let errs = strata_ruler::unittest::run_file_with(f, &opts);
        if errs.is_empty() {
            println!("  SUCCESS\n");
        } else {
            failed = true;
            eprintln!("  FAILED:");
            for e in errs {
                eprintln!("{e}");
            }
            eprintln!();
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
