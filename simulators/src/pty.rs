//! A pair of connected pseudo-terminals made by socat, for serial (Modbus RTU) tests and
//! demos without hardware: one end for the device, one for the client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Two connected pseudo-terminals made by socat; killed and cleaned up on drop.
pub struct PtyPair {
    socat: Child,
    dir: PathBuf,
    /// The end the simulator serves.
    pub server: PathBuf,
    /// The end a client opens.
    pub client: PathBuf,
}

impl PtyPair {
    /// Starts socat and waits (up to 10 s) for both ends to exist.
    pub fn new() -> Result<PtyPair, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "citygate-sim-pty-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (server, client) = (dir.join("server"), dir.join("client"));
        let end = |p: &Path| format!("pty,raw,echo=0,link={}", p.display());
        let socat = match Command::new("socat")
            .args(["-d", "-d", &end(&server), &end(&client)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err("socat is not installed: install with: apt-get install socat".into())
            }
            Err(e) => return Err(format!("cannot start socat: {e}")),
        };
        let pair = PtyPair {
            socat,
            dir,
            server,
            client,
        };
        // socat creates the links once both ptys are open.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(pair.server.exists() && pair.client.exists()) {
            if Instant::now() > deadline {
                return Err("socat made no pty pair in 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pair)
    }

    pub fn server_path(&self) -> String {
        self.server.display().to_string()
    }

    pub fn client_path(&self) -> String {
        self.client.display().to_string()
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
