//! Integration tests of registry-client.
