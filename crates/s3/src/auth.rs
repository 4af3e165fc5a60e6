//! Who may call: access keys checked by SigV4 (in `s3s`), and anonymous
//! reads of buckets whose record says `public`.

use std::path::Path;
use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};

use crate::Error;

/// One access key and its secret.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The access key id (public: it names the key in signatures).
    pub access_key: String,
    /// The secret (never logged, never shown by the console).
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// A fresh random pair in AWS's shapes (20 upper-case characters, 40
    /// characters of secret).
    pub fn generate() -> Result<Credentials, Error> {
        let hex = |n| node::session::random_hex(n).map_err(|e| Error::Credentials(e.to_string()));
        Ok(Credentials {
            access_key: format!("STRATA{}", hex(7)?.to_uppercase()),
            secret_key: hex(20)?,
        })
    }

    /// The pair kept in `dir/s3-credentials.json`, made on first use (so a
    /// `serve` prints the same keys after a restart). The file is written
    /// owner-only.
    pub fn load_or_create(dir: &Path) -> Result<Credentials, Error> {
        let path = dir.join("s3-credentials.json");
        let bad =
            |e: &dyn std::fmt::Display| Error::Credentials(format!("{}: {e}", path.display()));
        match std::fs::read(&path) {
            Ok(raw) => serde_json::from_slice(&raw).map_err(|e| bad(&e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let c = Credentials::generate()?;
                let raw = serde_json::to_vec_pretty(&c).map_err(|e| bad(&e))?;
                let tmp = path.with_extension("json.tmp");
                write_private(&tmp, &raw).map_err(|e| bad(&e))?;
                std::fs::rename(&tmp, &path).map_err(|e| bad(&e))?;
                // The rename is durable only once the directory is synced:
                // a crash must not hand out a second pair after restart.
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| bad(&e))?;
                Ok(c)
            }
            Err(e) => Err(bad(&e)),
        }
    }
}

fn write_private(path: &Path, raw: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(raw)?;
    f.sync_all()
}

/// The access keys the endpoint accepts.
pub(crate) struct Keys(pub(crate) Vec<Credentials>);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0
            .iter()
            .find(|c| c.access_key == access_key)
            .map(|c| SecretKey::from(c.secret_key.as_str()))
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

/// Signed requests may do anything; unsigned ones may only read objects
/// and list buckets whose record says `public` (canned ACL
/// `public-read`), so browsers and CDNs fetch by URL.
pub(crate) struct Access {
    pub(crate) node: Arc<node::Node>,
}

/// Operations an anonymous caller may run on a public bucket.
const PUBLIC_READS: [&str; 5] = [
    "GetObject",
    "HeadObject",
    "ListObjects",
    "ListObjectsV2",
    "HeadBucket",
];

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() {
            return Ok(());
        }
        let bucket = match cx.s3_path() {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket.to_string(),
            S3Path::Root => return Err(s3_error!(AccessDenied, "Signature is required")),
        };
        if PUBLIC_READS.contains(&cx.s3_op().name())
            && crate::names::bucket_record(&self.node, &bucket)
                .await?
                .is_some_and(|r| r.public)
        {
            return Ok(());
        }
        Err(s3_error!(AccessDenied, "Signature is required"))
    }
}
