//! Loading a built image into a local image store, as `docker buildx build --load` does:
//! the Docker engine (its `docker load`), or containerd's image store (`ctr images
//! import`). Build with a [`docker`](crate::ExportKind::Docker) output to a file, then
//! [`LoadTarget::load`] it; [`LoadTarget::probe`] before the build says at once when
//! there is nothing to load into.
//!
//! ```no_run
//! # async fn f() -> Result<(), builder_core::Error> {
//! use builder_core::{Build, NullSink, load::LoadTarget};
//! let target = LoadTarget::parse("docker")?;
//! target.probe()?;
//! let tar = std::env::temp_dir().join("app.tar");
//! Build::new(".")?
//!     .tag("app:dev")?
//!     .output(format!("type=docker,dest={}", tar.display()).parse()?)
//!     .run(&mut NullSink)
//!     .await?;
//! let said = target.load(&tar)?;
//! println!("{said}");
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// containerd's default socket.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Where `--load` puts the image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadTarget {
    /// The Docker engine the `docker` CLI talks to (`DOCKER_HOST`, its context).
    Docker,
    /// containerd's image store.
    Containerd {
        /// The socket (`CONTAINERD_ADDRESS`, else [`CONTAINERD_SOCKET`]).
        address: PathBuf,
        /// The namespace (`CONTAINERD_NAMESPACE`, else `default`).
        namespace: String,
    },
}

fn load_error(target: &str, reason: impl Into<String>) -> Error {
    Error::Load {
        target: target.to_owned(),
        reason: reason.into(),
    }
}

impl LoadTarget {
    /// `docker` or `containerd` (with the address and namespace from the environment).
    pub fn parse(s: &str) -> Result<LoadTarget, Error> {
        match s {
            "docker" => Ok(LoadTarget::Docker),
            "containerd" => Ok(LoadTarget::Containerd {
                address: std::env::var_os("CONTAINERD_ADDRESS")
                    .filter(|v| !v.is_empty())
                    .map_or_else(|| PathBuf::from(CONTAINERD_SOCKET), PathBuf::from),
                namespace: std::env::var("CONTAINERD_NAMESPACE")
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "default".to_owned()),
            }),
            other => Err(crate::engine::invalid_option(
                "load",
                other,
                "expected docker or containerd",
            )),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            LoadTarget::Docker => "docker",
            LoadTarget::Containerd { .. } => "containerd",
        }
    }

    /// Whether the store answers: the Docker engine's version, or containerd's socket and
    /// its `ctr` client.
    pub fn probe(&self) -> Result<(), Error> {
        match self {
            LoadTarget::Docker => {
                let out = Command::new("docker")
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| load_error("docker", format!("cannot run the docker CLI: {e}")))?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    return Err(load_error(
                        "docker",
                        format!(
                            "no Docker engine answers ({}); push the image (--push) or \
                             write it to a file (--output type=docker,dest=FILE)",
                            err.trim()
                        ),
                    ));
                }
                Ok(())
            }
            LoadTarget::Containerd { address, .. } => {
                use std::os::unix::fs::FileTypeExt;
                if !std::fs::metadata(address).is_ok_and(|m| m.file_type().is_socket()) {
                    return Err(load_error(
                        "containerd",
                        format!(
                            "no containerd socket at {} (set CONTAINERD_ADDRESS); push the \
                             image (--push) or write it to a file (--output type=oci,dest=FILE)",
                            address.display()
                        ),
                    ));
                }
                Command::new("ctr")
                    .arg("--version")
                    .output()
                    .map_err(|e| load_error("containerd", format!("cannot run ctr: {e}")))?;
                Ok(())
            }
        }
    }

    /// Loads the docker-archive at `archive`; returns what the store said (`Loaded
    /// image: …`).
    pub fn load(&self, archive: &Path) -> Result<String, Error> {
        let mut cmd = match self {
            LoadTarget::Docker => {
                let mut c = Command::new("docker");
                c.arg("load").arg("-i").arg(archive);
                c
            }
            LoadTarget::Containerd { address, namespace } => {
                let mut c = Command::new("ctr");
                c.arg("--address")
                    .arg(address)
                    .args(["--namespace", namespace, "images", "import", "--"])
                    .arg(archive);
                c
            }
        };
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| load_error(self.name(), e.to_string()))?;
        if !out.status.success() {
            return Err(load_error(
                self.name(),
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}
