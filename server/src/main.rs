//! The `chat-server` binary: flags, logging, then the library's accept loop.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use chat_server::config::{self, Tool};
use chat_server::essential::Essentials;
use chat_server::server::Listeners;
use chat_server::status::{self, Listening};
use chat_server::tls::{self, Certificates};
use chat_server::{logging, server, shutdown, Config};
use tracing::{info, warn};

/// mimalloc (its v2 line) keeps far less memory than glibc's allocator
/// after the many short-lived buffers of a login storm: an idle user costs
/// 3 to 5 KiB instead of about 16 (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v2's `mi_option_purge_delay` (its `mimalloc.h` enum), which the
/// Rust bindings do not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Gives freed memory back to the OS at once rather than after 10 ms of
/// quiet: a login storm fills every connection's inbox for a moment, and
/// an idle server should not keep that peak (docs/PERFORMANCE.md).
fn return_freed_memory_at_once() {
    // SAFETY: sets a plain integer option; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// How often, at most, a worker thread that goes idle tidies its heap.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Lets a worker thread that goes idle give back the pages it owns whose
/// blocks other threads freed. mimalloc's heaps are per thread, and a block
/// freed by another thread (a `NAMES` built by the hub and written by a
/// session, an inbox emptied elsewhere) only returns to its page when the
/// owner next allocates from it or collects: after a login storm an idle
/// server kept megabytes that way. At most once a second per thread, and
/// only when the thread has nothing to do: a collection of a heap that
/// serves 10 000 users takes about a millisecond.
fn collect_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    LAST.with(|last| {
        if last
            .get()
            .is_none_or(|at| now.duration_since(at) >= COLLECT_EVERY)
        {
            last.set(Some(now));
            // SAFETY: collects the calling thread's own heap; no pointers
            // are passed.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => fail(format_args!("cannot start the runtime: {e}")),
    }
}

async fn run() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            logging::init();
            return fail(format_args!("{e}"));
        }
    };
    if config.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    logging::init();
    if let Some(Tool::Mkcert { out, names, force }) = &config.tool {
        return match tls::mkcert(out, names, *force) {
            Ok((cert, key)) => {
                println!("wrote {} and {}", cert.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(format_args!("{e}")),
        };
    }
    // A TLS setup that cannot work stops the server before anything else.
    let certificates = match config.tls_files() {
        Ok(None) => None,
        Ok(Some((cert, key))) => match Certificates::load(cert, key) {
            Ok(certificates) => Some(Arc::new(certificates)),
            Err(e) => return fail(format_args!("{e}")),
        },
        Err(e) => return fail(format_args!("{e}")),
    };
    let acceptor = match certificates
        .as_ref()
        .map(Certificates::acceptor)
        .transpose()
    {
        Ok(acceptor) => acceptor,
        Err(e) => return fail(format_args!("{e}")),
    };
    // Each user is a file descriptor; allow as many as the hard limit does.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < config.max_clients + 64 => warn!(
            limit,
            max_clients = config.max_clients,
            "the file-descriptor limit is below --max-clients"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "could not raise the file-descriptor limit"),
    }
    let mut essentials = Essentials::new();
    let shutdown = match shutdown::on_signal() {
        Ok((token, watcher)) => {
            essentials.watch([("signal watcher", watcher)]);
            token
        }
        Err(e) => return fail(format_args!("cannot watch for signals: {e}")),
    };
    // SIGHUP must never end the server, TLS or not (`systemctl reload`).
    match tls::reload_on_hangup(certificates) {
        Ok(reloader) => essentials.watch([("SIGHUP watcher", reloader)]),
        Err(e) => return fail(format_args!("cannot watch for SIGHUP: {e}")),
    }
    let hub = match server::start_hub(&config, &shutdown).await {
        Ok((hub, tasks)) => {
            essentials.watch(tasks);
            hub
        }
        Err(e) => return fail(format_args!("{e}")),
    };
    // The status endpoint comes up first: /readyz must say "not ready"
    // while a cluster node is still joining.
    let listening = Listening::default();
    let status = match &config.metrics {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr.as_str()).await {
            Ok(listener) => {
                let addr = match listener.local_addr() {
                    Ok(addr) => addr,
                    Err(e) => {
                        return fail(format_args!("cannot listen on {addr} for metrics: {e}"))
                    }
                };
                if let Err(e) = status::check_address(addr, config.metrics_public) {
                    return fail(format_args!("{e}"));
                }
                if !addr.ip().to_canonical().is_loopback() {
                    warn!(
                        %addr,
                        "serving metrics on an address other than loopback (--metrics-public): \
                         anyone who can reach it reads them, unauthenticated; keep it behind a firewall"
                    );
                }
                let addr = addr.to_string();
                let task =
                    status::serve(listener, hub.clone(), listening.clone(), shutdown.clone());
                essentials.watch([("metrics endpoint", task)]);
                Some(addr)
            }
            Err(e) => return fail(format_args!("cannot listen on {addr} for metrics: {e}")),
        },
    };
    // Say nothing of listening until the hub can serve (cluster mode:
    // until this node follows the bus), or clearly give up waiting.
    tokio::select! {
        ready = server::until_ready(&hub, &config) => if !ready {
            warn!(
                url = config.cluster.as_deref().map(config::redact_url).unwrap_or_default(),
                waited = %humantime::format_duration(config.lease),
                "cannot reach the cluster bus; serving anyway: NAME, MSG and WHO \
                 get ERROR unavailable until it is reachable"
            );
        },
        failure = essentials.failure(&shutdown) => {
            return fail(format_args!("{failure}; exiting"));
        }
        () = shutdown.cancelled() => {
            hub.close().await;
            return ExitCode::SUCCESS;
        }
    }
    let plain = match server::bind(&config.addr).await {
        Ok(listener) => listener,
        Err(e) => return fail(format_args!("cannot listen on {}: {e}", config.addr)),
    };
    let tls = match &acceptor {
        None => None,
        Some(acceptor) => match server::bind(&config.tls_addr).await {
            Ok(listener) => Some((listener, acceptor.clone())),
            Err(e) => return fail(format_args!("cannot listen on {}: {e}", config.tls_addr)),
        },
    };
    let web = match &config.web_addr {
        None => None,
        Some(addr) => match server::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => return fail(format_args!("cannot listen on {addr} (--web-addr): {e}")),
        },
    };
    // `tls_files` has refused --web-tls-addr without a certificate.
    let web_tls = match (&config.web_tls_addr, acceptor) {
        (Some(addr), Some(acceptor)) => match server::bind(addr).await {
            Ok(listener) => Some((listener, acceptor)),
            Err(e) => {
                return fail(format_args!(
                    "cannot listen on {addr} (--web-tls-addr): {e}"
                ))
            }
        },
        _ => None,
    };
    let local = |listener: &tokio::net::TcpListener| {
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    };
    // Scripts and tests read these lines to learn the ports. Like the logs,
    // they must not panic if stdout is already gone.
    listening.set();
    let mut stdout = std::io::stdout();
    let addr = local(&plain);
    let _ = writeln!(stdout, "listening on {addr}");
    info!(%addr, "listening");
    if let Some((listener, _)) = &tls {
        let addr = local(listener);
        let _ = writeln!(stdout, "listening for TLS on {addr}");
        info!(%addr, "listening for TLS");
    }
    if let Some(listener) = &web {
        let addr = local(listener);
        let _ = writeln!(stdout, "listening for HTTP on {addr}");
        info!(%addr, "serving the browser client and its WebSocket over HTTP");
    }
    if let Some((listener, _)) = &web_tls {
        let addr = local(listener);
        let _ = writeln!(stdout, "listening for HTTPS on {addr}");
        info!(%addr, "serving the browser client and its WebSocket over HTTPS");
    }
    if let Some(addr) = &status {
        let _ = writeln!(stdout, "metrics on {addr}");
        info!(%addr, "serving metrics, /healthz and /readyz");
    }
    let _ = stdout.flush();
    let listeners = Listeners {
        plain,
        tls,
        web,
        web_tls,
    };
    match server::run(listeners, hub, config, shutdown, essentials).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(format_args!("{failure}; exiting")),
    }
}

/// Reports why the server cannot go on, on stderr if it still can, and
/// the exit status that says so.
fn fail(reason: std::fmt::Arguments<'_>) -> ExitCode {
    logging::say(reason);
    ExitCode::FAILURE
}
