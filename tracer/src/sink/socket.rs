//! The control socket: a Unix socket (mode 0600) from which `tracer live` and other clients
//! read the live record stream.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

use super::fanout::Fanout;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something else answers on the path.
    #[error("another tracer is already listening on {0}: stop it or choose another --socket")]
    InUse(PathBuf),
    /// Creating the directory, binding or setting the mode failed.
    #[error("cannot open the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A bound control socket; the file is removed when it is dropped.
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Binds `path` (creating its directory), replacing a stale socket file left by a tracer
    /// that died, and serves `fanout` to every client.
    pub fn bind(path: &Path, fanout: Fanout) -> Result<Self, SocketError> {
        let io = |source| SocketError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io)?;
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // Records name processes and addresses: only root may read them.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let f = fanout.clone();
                        tokio::spawn(async move {
                            let (_read, write) = stream.into_split();
                            // A client going away ends its pump; nothing else to do.
                            let _ = f.pump(write).await;
                        });
                    }
                    Err(e) => {
                        log::warn!("control socket: accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Self {
            path: path.to_path_buf(),
            task,
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
