//! Password hashing, kept off the async workers.
//!
//! argon2id is slow on purpose (tens of milliseconds and 19 MiB a hash), so
//! a storm of registered logins run on a tokio worker would stall every
//! other user on it. A [`Hasher`] runs the work on its own threads, at most
//! one per core, fed by a bounded queue that callers wait on asynchronously:
//! a storm delays those logins only, as the contract asks.
//!
//! Nothing here logs, formats or stores a password; no type that holds one
//! implements `Debug`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::{mpsc, oneshot};

pub use argon2::Params;

/// Jobs that may wait for a hashing thread; past this, callers wait
/// (asynchronously) for room in the queue.
pub const QUEUE: usize = 1024;

/// The shortest password the contract accepts, in bytes.
pub const MIN_PASSWORD: usize = 8;
/// The longest password the contract accepts, in bytes.
pub const MAX_PASSWORD: usize = 128;

/// The contract's rule for a password: one token of 8 to 128 bytes of UTF-8
/// with no space and no control character. A `&str` is UTF-8 already.
pub fn password_ok(password: &str) -> bool {
    (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.len())
        && !password.chars().any(|c| c == ' ' || c.is_control())
}

/// Why a password could not be hashed. Never holds the password.
#[derive(Debug)]
pub enum HashError {
    /// The hashing threads are gone (they only stop when every [`Hasher`]
    /// is dropped, or if one panicked).
    Stopped,
    /// argon2 refused the job (it only does for out-of-range parameters).
    Argon2(String),
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Stopped => f.write_str("the password hashing threads have stopped"),
            HashError::Argon2(why) => write!(f, "argon2 could not hash a password: {why}"),
        }
    }
}

impl std::error::Error for HashError {}

/// Hashes and verifies passwords on dedicated threads. Cheap to clone: the
/// clones share the threads, which end when the last clone is dropped
/// (dropping closes the queue; jobs already queued are still answered).
#[derive(Clone)]
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
    threads: usize,
    counters: Arc<Counters>,
}

/// What the threads report, read by the metrics getters.
#[derive(Default)]
struct Counters {
    /// Jobs done (hashes and verifications), for an average.
    done: AtomicU64,
    last_micros: AtomicU64,
    total_micros: AtomicU64,
    running: AtomicUsize,
    /// The most jobs seen running at once.
    busiest: AtomicUsize,
}

/// One piece of work for a hashing thread. No `Debug`: it holds a password.
enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, HashError>>,
    },
    Verify {
        password: String,
        phc: String,
        reply: oneshot::Sender<bool>,
    },
}

impl Hasher {
    /// The OWASP minimum for argon2id (m = 19 MiB, t = 2, p = 1): what a
    /// server should use unless it has chosen stronger parameters.
    pub fn owasp() -> Hasher {
        Hasher::new(Params::default())
    }

    /// Cheap parameters (8 KiB, one pass), so tests hash in microseconds.
    /// Verification reads the parameters from the PHC string, so hashes
    /// made here verify with any `Hasher`.
    pub fn for_tests() -> Hasher {
        Hasher::new(Params::new(Params::MIN_M_COST, 1, 1, None).expect("valid argon2 params"))
    }

    /// A hasher with the given argon2id parameters, on one thread per core.
    pub fn new(params: Params) -> Hasher {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        Hasher::with_threads(params, cores)
    }

    /// A hasher with the given parameters on `threads` threads (at least
    /// one): the number of jobs that may run at once.
    pub fn with_threads(params: Params, threads: usize) -> Hasher {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel(QUEUE);
        // The threads share the receiving end; only the `Hasher`s hold the
        // sending end, so dropping the last one ends the threads.
        let queue = Arc::new(Mutex::new(queue));
        let counters = Arc::new(Counters::default());
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let counters = Arc::clone(&counters);
            let argon2 = argon2.clone();
            thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || {
                    yield_to_the_chat();
                    work(&queue, &argon2, &counters)
                })
                .expect("spawn a password hashing thread");
        }
        Hasher {
            jobs,
            threads,
            counters,
        }
    }

    /// Hashes `password` with a fresh random salt into a PHC string
    /// (`$argon2id$v=19$m=...`), the only form a password is ever kept in.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply }).await?;
        answer.await.map_err(|_| HashError::Stopped)?
    }

    /// Whether `password` matches the PHC string `phc` (argon2's own
    /// constant-time comparison). A malformed `phc` never matches.
    pub async fn verify(&self, password: String, phc: String) -> bool {
        let (reply, answer) = oneshot::channel();
        let job = Job::Verify {
            password,
            phc,
            reply,
        };
        if self.submit(job).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    async fn submit(&self, job: Job) -> Result<(), HashError> {
        // `send` waits asynchronously while the queue is full.
        self.jobs.send(job).await.map_err(|_| HashError::Stopped)
    }

    /// Jobs queued now, waiting for a thread (not counting those running).
    pub fn waiting(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Jobs running now, at most [`Hasher::threads`].
    pub fn running(&self) -> usize {
        self.counters.running.load(Ordering::Relaxed)
    }

    /// The most jobs seen running at once: never more than
    /// [`Hasher::threads`]; a server that sits at it needs more cores.
    pub fn busiest(&self) -> usize {
        self.counters.busiest.load(Ordering::Relaxed)
    }

    /// How many jobs may run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Jobs done so far, hashes and verifications alike.
    pub fn jobs_done(&self) -> u64 {
        self.counters.done.load(Ordering::Relaxed)
    }

    /// How long the last job took on its thread (not counting its wait).
    pub fn last_work(&self) -> Duration {
        Duration::from_micros(self.counters.last_micros.load(Ordering::Relaxed))
    }

    /// How long all jobs took on their threads, added up.
    pub fn total_work(&self) -> Duration {
        Duration::from_micros(self.counters.total_micros.load(Ordering::Relaxed))
    }
}

/// A hashing thread: takes jobs until every `Hasher` is gone.
fn work(queue: &Mutex<mpsc::Receiver<Job>>, argon2: &Argon2<'_>, counters: &Counters) {
    loop {
        // One thread waits on the queue at a time; the others wait on the
        // lock, which comes to the same thing.
        let job = match queue.lock() {
            Ok(mut queue) => queue.blocking_recv(),
            Err(_) => return,
        };
        let Some(job) = job else { return };
        // A caller that gave up needs no answer; its job is skipped.
        match job {
            Job::Hash { password, reply } if !reply.is_closed() => {
                let phc = counters.time(|| {
                    argon2
                        .hash_password(password.as_bytes())
                        .map(|hash| hash.to_string())
                        .map_err(|e| HashError::Argon2(e.to_string()))
                });
                let _ = reply.send(phc);
            }
            Job::Verify {
                password,
                phc,
                reply,
            } if !reply.is_closed() => {
                let ok = counters.time(|| {
                    argon2
                        .verify_password(password.as_bytes(), phc.as_str())
                        .is_ok()
                });
                let _ = reply.send(ok);
            }
            Job::Hash { .. } | Job::Verify { .. } => {}
        }
    }
}

impl Counters {
    /// Runs one job, counted while it runs and timed.
    fn time<T>(&self, job: impl FnOnce() -> T) -> T {
        let running = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.busiest.fetch_max(running, Ordering::Relaxed);
        let started = Instant::now();
        let result = job();
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_micros.store(micros, Ordering::Relaxed);
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.done.fetch_add(1, Ordering::Relaxed);
        self.running.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

/// How much lower than the chat's threads a hashing thread runs (a nice
/// value): hashing takes whatever CPU the chat leaves, so a storm of
/// registered logins delays those logins and not everyone's messages.
const HASHING_NICENESS: libc::c_int = 19;

/// Lowers the calling thread's scheduling priority (on Linux, `setpriority`
/// with `who = 0` applies to the calling thread alone).
fn yield_to_the_chat() {
    // SAFETY: a plain system call on the calling thread; a failure only
    // leaves the thread at the normal priority.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, HASHING_NICENESS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_and_a_wrong_password_does_not() {
        let hasher = Hasher::for_tests();
        let phc = hasher.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(hasher.verify("correct horse".into(), phc.clone()).await);
        assert!(!hasher.verify("correct horsf".into(), phc.clone()).await);
        assert!(!hasher.verify(String::new(), phc).await);
        assert!(!hasher.verify("x".into(), "not a phc string".into()).await);
        assert_eq!(hasher.jobs_done(), 5);
        assert!(hasher.total_work() >= hasher.last_work());
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ_by_their_salt() {
        let hasher = Hasher::for_tests();
        let a = hasher.hash("password1".into()).await.unwrap();
        let b = hasher.hash("password1".into()).await.unwrap();
        assert_ne!(a, b);
        assert!(hasher.verify("password1".into(), a).await);
        assert!(hasher.verify("password1".into(), b).await);
    }

    #[tokio::test]
    async fn the_owasp_parameters_are_in_the_phc_string() {
        let phc = Hasher::owasp().hash("password1".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        // Verification takes its parameters from the string.
        assert!(Hasher::for_tests().verify("password1".into(), phc).await);
    }

    #[test]
    fn passwords_follow_the_contract() {
        assert!(!password_ok("1234567"));
        assert!(password_ok("12345678"));
        assert!(password_ok(&"x".repeat(128)));
        assert!(!password_ok(&"x".repeat(129)));
        assert!(!password_ok(""));
        assert!(!password_ok("1234 5678"));
        assert!(!password_ok("1234\t5678"));
        assert!(!password_ok("12345678\n"));
        assert!(!password_ok("1234\u{7f}5678"));
        assert!(!password_ok("1234\u{85}5678"));
        // Bytes, not characters: 4 two-byte letters are 8 bytes...
        assert!(password_ok("éééé"));
        // ...and 3 are too short, though 6 bytes of UTF-8 are well-formed.
        assert!(!password_ok("ééé"));
        // 32 four-byte characters are 128 bytes; one more byte is too many.
        assert!(password_ok(&"🦀".repeat(32)));
        assert!(!password_ok(&format!("{}x", "🦀".repeat(32))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_jobs_all_finish_and_never_more_at_once_than_the_threads() {
        let hasher = Hasher::with_threads(Params::new(Params::MIN_M_COST, 1, 1, None).unwrap(), 2);
        // More jobs than the queue holds: the rest wait asynchronously.
        let jobs = QUEUE + 200;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..jobs {
            let hasher = hasher.clone();
            tasks.spawn(async move {
                let password = format!("password{i}");
                let phc = hasher.hash(password.clone()).await.unwrap();
                hasher.verify(password, phc).await
            });
        }
        while let Some(verified) = tasks.join_next().await {
            assert!(verified.unwrap());
        }
        assert_eq!(hasher.jobs_done(), 2 * jobs as u64);
        assert!(hasher.busiest() <= 2, "{} at once", hasher.busiest());
        assert!(hasher.busiest() >= 1);
        assert_eq!(hasher.waiting(), 0);
        assert_eq!(hasher.running(), 0);
    }
}
