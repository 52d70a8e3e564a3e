//! Who a client is, and whether it may do what it asks
//! (`authorization.*`).
//!
//! A client's principal is `User:` and the common name (CN) of the
//! certificate it presented on the TLS handshake (`tls.client_ca_file`
//! makes one required); a client without one is `User:ANONYMOUS`. With
//! `authorization.enabled`, every request is checked against the cluster's
//! access control bindings (`strata_raft::acl`), as Kafka's authorizer
//! does; the principals in `authorization.super_users` may do everything,
//! so that the first bindings can be made.

use std::sync::Arc;

use strata_raft::acl::{self, Operation, ResourceType};
use strata_raft::metadata::ClusterMetadata;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::error::{ApiError, Code};

/// The principal of a client that presented no certificate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The name Kafka gives the cluster resource, used in messages.
const CLUSTER_NAME: &str = "kafka-cluster";

/// The authorization settings of a node.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    /// Whether requests are checked at all.
    pub enabled: bool,
    /// Principals allowed everything.
    pub super_users: Vec<String>,
}

/// One client's rights for one request: its principal and the bindings as
/// this node's metadata has them.
pub struct Access {
    /// `User:NAME` (empty when authorization is off).
    pub principal: String,
    /// Whose bindings apply; `None`: everything is allowed (authorization
    /// is off, or a super user).
    acls: Option<Arc<ClusterMetadata>>,
}

impl Authorizer {
    /// The rights of the client that sent a request with these
    /// extensions, by the bindings of `metadata` (read only when they
    /// apply).
    pub fn access(&self, extensions: &tonic::Extensions, metadata: impl FnOnce() -> Arc<ClusterMetadata>) -> Access {
        if !self.enabled {
            return Access { principal: String::new(), acls: None };
        }
        let principal = principal_of(extensions);
        let checked = !self.super_users.contains(&principal);
        Access { acls: checked.then(metadata), principal }
    }
}

impl Access {
    /// Whether everything is allowed without looking (authorization is
    /// off, or a super user).
    pub fn unchecked(&self) -> bool {
        self.acls.is_none()
    }

    /// Whether the client may do `operation` to the resource.
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        match &self.acls {
            None => true,
            Some(metadata) => acl::authorized(&metadata.acls, &self.principal, operation, resource_type, name),
        }
    }

    /// As [`Access::allows`], as a NOT_AUTHORIZED error that says what
    /// was refused.
    pub fn check(&self, operation: Operation, resource_type: ResourceType, name: &str) -> Result<(), ApiError> {
        if self.allows(operation, resource_type, name) {
            return Ok(());
        }
        let name = if resource_type == ResourceType::Cluster { CLUSTER_NAME } else { name };
        Err(ApiError::new(
            Code::NotAuthorized,
            format!("{} may not {operation} {resource_type} {name}", self.principal),
        ))
    }

    /// Whether the client may do `operation` to some resource of this type
    /// (see [`acl::authorized_for_some`]).
    pub fn allows_some(&self, operation: Operation, resource_type: ResourceType) -> bool {
        match &self.acls {
            None => true,
            Some(metadata) => acl::authorized_for_some(&metadata.acls, &self.principal, operation, resource_type),
        }
    }
}

/// `User:CN` of the client certificate on the connection; [`ANONYMOUS`]
/// without one; `User:` (which only `User:*` bindings match) for a
/// certificate without a common name this can read.
fn principal_of(extensions: &tonic::Extensions) -> String {
    let certs = extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs());
    match certs.as_ref().and_then(|certs| certs.first()) {
        None => ANONYMOUS.to_string(),
        Some(cert) => format!("User:{}", common_name(cert.as_ref()).unwrap_or_default()),
    }
}

/// One DER element at the start of `input`: its tag, its contents, and
/// what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// As [`der_element`], only when the element has this tag: its contents
/// and what follows it.
fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    der_element(input).filter(|(t, _, _)| *t == tag).map(|(_, contents, rest)| (contents, rest))
}

/// The subject's common name of an X.509 certificate (DER), if it has
/// one as a string. The certificate was verified by the TLS handshake;
/// anything unexpected in it reads as no name.
pub fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    let (certificate, _) = expect(SEQUENCE, cert)?;
    let (tbs, _) = expect(SEQUENCE, certificate)?;
    // version ([0], optional), serial, signature algorithm, issuer,
    // validity, then the subject.
    let (tag, _, after_version) = der_element(tbs)?;
    let mut rest = if tag == 0xa0 { after_version } else { tbs };
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (mut names, _) = expect(SEQUENCE, rest)?;
    while !names.is_empty() {
        let (set, after) = expect(SET, names)?;
        names = after;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (attribute, after) = expect(SEQUENCE, attributes)?;
            attributes = after;
            let (oid, value) = expect(OID, attribute)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = der_element(value)?;
                // UTF8String, PrintableString, TeletexString, IA5String.
                return matches!(tag, 0x0c | 0x13 | 0x14 | 0x16)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten()
                    .filter(|cn| !cn.is_empty());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal certificate-shaped DER: the issuer is `issuer`, the other
    /// parts before the subject are empty elements.
    fn cert_with(issuer: &[u8], subject: &[u8]) -> Vec<u8> {
        let wrap = |tag: u8, body: &[u8]| {
            let mut out = vec![tag];
            if body.len() < 0x80 {
                out.push(body.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(body);
            out
        };
        let mut tbs = wrap(0xa0, &[0x02, 0x01, 0x02]);
        tbs.extend(wrap(0x02, &[0x01]));
        tbs.extend(wrap(0x30, &[]));
        tbs.extend(wrap(0x30, issuer));
        tbs.extend(wrap(0x30, &[]));
        tbs.extend(wrap(0x30, subject));
        wrap(0x30, &wrap(0x30, &tbs))
    }

    fn attribute(oid: &[u8], tag: u8, text: &str) -> Vec<u8> {
        let mut atv = vec![0x06, oid.len() as u8];
        atv.extend_from_slice(oid);
        atv.push(tag);
        atv.push(text.len() as u8);
        atv.extend_from_slice(text.as_bytes());
        let mut seq = vec![0x30, atv.len() as u8];
        seq.extend(atv);
        let mut set = vec![0x31, seq.len() as u8];
        set.extend(seq);
        set
    }

    #[test]
    fn the_common_name_is_found_among_the_subjects_attributes() {
        let issuer = attribute(&[0x55, 0x04, 0x03], 0x0c, "Acme CA");
        let mut subject = attribute(&[0x55, 0x04, 0x0a], 0x0c, "Acme"); // O
        subject.extend(attribute(&[0x55, 0x04, 0x03], 0x13, "alice")); // CN
        assert_eq!(common_name(&cert_with(&issuer, &subject)).as_deref(), Some("alice"), "the subject's CN");
        let only_org = attribute(&[0x55, 0x04, 0x0a], 0x0c, "Acme");
        assert_eq!(common_name(&cert_with(&issuer, &only_org)), None, "not the issuer's");
    }

    #[test]
    fn malformed_input_reads_as_no_name() {
        let good = cert_with(&[], &attribute(&[0x55, 0x04, 0x03], 0x0c, "bob"));
        for cut in 0..good.len() {
            assert_eq!(common_name(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn super_users_and_a_disabled_authorizer_are_not_checked() {
        let no_acls = || Arc::new(ClusterMetadata::default());
        let off = Authorizer::default().access(&tonic::Extensions::new(), no_acls);
        assert!(off.unchecked());
        assert!(off.allows(Operation::Write, ResourceType::Topic, "t"));
        let on = Authorizer { enabled: true, super_users: vec!["User:admin".into()] };
        let anonymous = on.access(&tonic::Extensions::new(), no_acls);
        let err = anonymous.check(Operation::Write, ResourceType::Topic, "t").expect_err("no binding");
        assert_eq!(err.code, Code::NotAuthorized);
        assert!(err.message.contains("User:ANONYMOUS may not write topic t"), "{}", err.message);
        let super_user = Authorizer { enabled: true, super_users: vec![ANONYMOUS.into()] };
        assert!(super_user.access(&tonic::Extensions::new(), no_acls).allows(
            Operation::Alter,
            ResourceType::Cluster,
            ""
        ));
    }
}
