//! The `keyhook` binary as a user runs it: a command with no cluster in
//! sight, and a running `keyhook serve` whose log is collected.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The binary under test.
pub const KEYHOOK: &str = env!("CARGO_BIN_EXE_keyhook");

/// `keyhook` in `workdir`, as on a fresh machine: `HOME` is `workdir`, no
/// `KUBECONFIG`, not in a pod, logs at info.
pub fn keyhook(workdir: &Path) -> Command {
    let mut command = Command::new(KEYHOOK);
    command
        .current_dir(workdir)
        .env("HOME", workdir)
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KEYHOOK_MODE")
        .env_remove("KEYHOOK_LOG_LEVEL")
        .env("RUST_LOG", "info");
    command
}

/// A loopback address no one listens on yet.
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A running keyhook, killed when dropped; its stdout and stderr are
/// collected as they come.
pub struct Spawned {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Spawned {
    /// Starts `command` with both streams collected.
    pub fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let streams: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        let mut readers = Vec::new();
        for stream in streams {
            let output = Arc::clone(&output);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut output = output.lock().unwrap();
                    output.push_str(&line);
                    output.push('\n');
                }
            }));
        }
        Self {
            child,
            output,
            readers,
        }
    }

    /// Everything written so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until the output contains `text`; panics with the output after `limit`.
    pub fn wait_for(&mut self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let output = self.output();
            if output.contains(text) {
                return output;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain();
                let output = self.output();
                assert!(
                    output.contains(text),
                    "keyhook exited ({status}) without writing `{text}`:\n{output}"
                );
                return output;
            }
            assert!(
                start.elapsed() < limit,
                "keyhook did not write `{text}` within {limit:?}:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// After the process exited: reads what it wrote last.
    fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
