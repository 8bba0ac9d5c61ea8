//! OCI distribution client: references, auth, resolve, pull, push, retries
#![forbid(unsafe_code)]
