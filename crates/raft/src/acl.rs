//! Access control lists: which principal may do what to which topic, group
//! or the cluster, decided as Kafka's authorizer does. The bindings live in
//! the cluster metadata (`MetadataCommand::CreateAcls` and `DeleteAcls`), so
//! every broker decides from the same list; the broker checks them on every
//! request when `authorization.enabled` is set.
//!
//! The rule: a request is allowed when some binding allows it and none
//! denies it. A binding names a principal (`User:alice`, or `User:*` for
//! everyone), a resource (a literal name, `*` for every name, or a prefix),
//! an operation (`All` covers every one) and a permission. Allowing `Read`,
//! `Write`, `Delete` or `Alter` also allows `Describe`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The principal that matches every principal.
pub const ANY_PRINCIPAL: &str = "User:*";
/// The resource name that, in a literal binding, matches every name.
pub const ANY_NAME: &str = "*";

macro_rules! words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word for it (`FromStr` reads it back, in any case).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<$name, String> {
                $name::ALL.iter().copied().find(|v| v.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
                    let known: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("{:?} is not a {} ({})", s, stringify!($name), known.join(", "))
                })
            }
        }
    };
}

words!(
    /// What a binding is about.
    ResourceType {
        /// A topic, by name.
        Topic => "topic",
        /// A consumer group, by name.
        Group => "group",
        /// The cluster (its one resource is named `kafka-cluster`, as in
        /// Kafka; any name given is ignored).
        Cluster => "cluster",
    }
);

words!(
    /// How a binding's name matches resources.
    PatternType {
        /// The name itself (`*`: every name).
        Literal => "literal",
        /// Every name that starts with it.
        Prefixed => "prefixed",
    }
);

words!(
    /// What a request does to a resource.
    Operation {
        /// Every operation.
        All => "all",
        /// Fetch records (topic); join, commit offsets (group).
        Read => "read",
        /// Produce records (topic).
        Write => "write",
        /// Create topics (cluster, or the topic's name).
        Create => "create",
        /// Delete a topic or a group.
        Delete => "delete",
        /// Change a topic's configuration or partitions; reassign, remove
        /// brokers, manage bindings (cluster).
        Alter => "alter",
        /// See a topic, a group, or (cluster) the bindings.
        Describe => "describe",
    }
);

words!(
    /// Whether a binding allows or denies.
    Permission {
        /// Allows.
        Allow => "allow",
        /// Denies, whatever else allows.
        Deny => "deny",
    }
);

/// One access control entry on one resource pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    /// `User:NAME`, or [`ANY_PRINCIPAL`].
    pub principal: String,
    /// The kind of resource.
    pub resource_type: ResourceType,
    /// The resource's name, or a prefix of names (see `pattern`).
    pub resource_name: String,
    /// How `resource_name` matches.
    pub pattern: PatternType,
    /// The operation.
    pub operation: Operation,
    /// Allow or deny.
    pub permission: Permission,
}

impl AclBinding {
    /// Checks the fields a binding must have: a principal of the form
    /// `User:NAME` and a resource name (not for the cluster).
    pub fn validate(&self) -> Result<(), String> {
        match self.principal.split_once(':') {
            Some(("User", name)) if !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal {:?} is not of the form User:NAME (User:* for everyone)",
                    self.principal
                ));
            }
        }
        if self.resource_type != ResourceType::Cluster && self.resource_name.is_empty() {
            return Err(format!("a {} binding needs a resource name ({ANY_NAME} for every one)", self.resource_type));
        }
        if self.pattern == PatternType::Prefixed && self.resource_name == ANY_NAME {
            return Err(format!("a prefixed binding's prefix cannot be {ANY_NAME}; use a literal {ANY_NAME}"));
        }
        Ok(())
    }

    fn matches_principal(&self, principal: &str) -> bool {
        self.principal == ANY_PRINCIPAL || self.principal == principal
    }

    fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        if self.resource_type != resource_type {
            return false;
        }
        if resource_type == ResourceType::Cluster {
            return true;
        }
        match self.pattern {
            PatternType::Literal => self.resource_name == ANY_NAME || self.resource_name == name,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
        }
    }

    fn covers(&self, operation: Operation) -> bool {
        self.operation == Operation::All
            || self.operation == operation
            || (operation == Operation::Describe
                && self.permission == Permission::Allow
                && matches!(self.operation, Operation::Read | Operation::Write | Operation::Delete | Operation::Alter))
    }
}

/// Whether `principal` may do `operation` to the resource, by `acls`: some
/// binding allows it and none denies it.
pub fn authorized(
    acls: &[AclBinding],
    principal: &str,
    operation: Operation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    let mut allowed = false;
    for acl in acls {
        if acl.matches_principal(principal) && acl.matches_resource(resource_type, name) && acl.covers(operation) {
            match acl.permission {
                Permission::Deny => return false,
                Permission::Allow => allowed = true,
            }
        }
    }
    allowed
}

/// Whether `principal` may do `operation` to at least one resource of
/// `resource_type` by `acls`, as Kafka decides it for a producer id: some
/// binding allows it on a set of names that no deny binding covers whole.
/// (A deny on a prefix covers an allow on a longer prefix or a name it
/// starts; a deny on `*` covers every allow; an allow on `*` is covered by
/// nothing narrower, since some name escapes it.)
pub fn authorized_for_some(
    acls: &[AclBinding],
    principal: &str,
    operation: Operation,
    resource_type: ResourceType,
) -> bool {
    let applies = |acl: &&AclBinding| {
        acl.resource_type == resource_type && acl.matches_principal(principal) && acl.covers(operation)
    };
    let denies: Vec<&AclBinding> = acls.iter().filter(applies).filter(|a| a.permission == Permission::Deny).collect();
    acls.iter()
        .filter(applies)
        .filter(|a| a.permission == Permission::Allow)
        .any(|allow| !denies.iter().any(|deny| deny.covers_names_of(allow)))
}

impl AclBinding {
    /// Whether every name `other` matches is one this binding matches.
    fn covers_names_of(&self, other: &AclBinding) -> bool {
        if self.resource_type == ResourceType::Cluster {
            return true;
        }
        let any = |acl: &AclBinding| acl.pattern == PatternType::Literal && acl.resource_name == ANY_NAME;
        match self.pattern {
            _ if any(self) => true,
            _ if any(other) => false,
            PatternType::Literal => other.pattern == PatternType::Literal && other.resource_name == self.resource_name,
            PatternType::Prefixed => other.resource_name.starts_with(&self.resource_name),
        }
    }
}

/// Selects bindings to describe or delete: each field set must equal the
/// binding's, each unset one matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclFilter {
    /// The principal.
    pub principal: Option<String>,
    /// The resource type.
    pub resource_type: Option<ResourceType>,
    /// The resource name (or prefix) as stored.
    pub resource_name: Option<String>,
    /// The pattern type.
    pub pattern: Option<PatternType>,
    /// The operation.
    pub operation: Option<Operation>,
    /// The permission.
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// Whether `acl` is selected.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.resource_type.is_none_or(|t| t == acl.resource_type)
            && self.resource_name.as_ref().is_none_or(|n| *n == acl.resource_name)
            && self.pattern.is_none_or(|p| p == acl.pattern)
            && self.operation.is_none_or(|o| o == acl.operation)
            && self.permission.is_none_or(|p| p == acl.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        principal: &str,
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            principal: principal.into(),
            resource_type: rt,
            resource_name: name.into(),
            pattern,
            operation: op,
            permission: perm,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn nothing_is_allowed_without_a_binding() {
        assert!(!authorized(&[], "User:alice", Read, Topic, "orders"));
    }

    #[test]
    fn literal_prefixed_and_wildcard_names_match_as_kafka_does() {
        let acls = vec![
            acl("User:alice", Topic, "orders", Literal, Read, Allow),
            acl("User:bob", Topic, "pay.", Prefixed, Write, Allow),
            acl("User:*", Topic, "*", Literal, Describe, Allow),
        ];
        assert!(authorized(&acls, "User:alice", Read, Topic, "orders"));
        assert!(!authorized(&acls, "User:alice", Read, Topic, "orders2"), "literal is the whole name");
        assert!(!authorized(&acls, "User:alice", Write, Topic, "orders"), "read is not write");
        assert!(authorized(&acls, "User:bob", Write, Topic, "pay.eu"));
        assert!(!authorized(&acls, "User:bob", Write, Topic, "payments"), "the prefix includes the dot");
        assert!(authorized(&acls, "User:carol", Describe, Topic, "anything"), "User:* and * match all");
        assert!(!authorized(&acls, "User:alice", Read, Group, "orders"), "a topic binding is not a group's");
    }

    #[test]
    fn a_deny_wins_and_allowing_read_write_delete_or_alter_allows_describe() {
        let acls = vec![
            acl("User:*", Topic, "*", Literal, All, Allow),
            acl("User:mallory", Topic, "secret", Literal, Read, Deny),
        ];
        assert!(authorized(&acls, "User:mallory", Write, Topic, "secret"));
        assert!(!authorized(&acls, "User:mallory", Read, Topic, "secret"));
        assert!(authorized(&acls, "User:mallory", Describe, Topic, "secret"), "a denied read is not a denied describe");
        for op in [Read, Write, Delete, Alter] {
            let acls = vec![acl("User:a", Group, "g", Literal, op, Allow)];
            assert!(authorized(&acls, "User:a", Describe, Group, "g"), "{op} implies describe");
        }
        let acls = vec![acl("User:a", Group, "g", Literal, Create, Allow)];
        assert!(!authorized(&acls, "User:a", Describe, Group, "g"), "create does not");
        let acls = vec![acl("User:a", Cluster, "", Literal, Alter, Allow)];
        assert!(authorized(&acls, "User:a", Alter, Cluster, "kafka-cluster"));
    }

    #[test]
    fn some_resource_is_allowed_unless_denies_cover_every_allowed_name() {
        let some = |acls: &[AclBinding]| authorized_for_some(acls, "User:a", Write, Topic);
        let allow_prefix = acl("User:a", Topic, "orders.", Prefixed, Write, Allow);
        assert!(!some(&[]));
        assert!(some(std::slice::from_ref(&allow_prefix)));
        assert!(!some(&[acl("User:a", Topic, "t", Literal, Read, Allow)]), "read is not write");
        assert!(!some(&[allow_prefix.clone(), acl("User:*", Topic, "*", Literal, Write, Deny)]), "denied everywhere");
        assert!(
            !some(&[allow_prefix.clone(), acl("User:a", Topic, "orders", Prefixed, All, Deny)]),
            "a shorter prefix"
        );
        assert!(
            some(&[allow_prefix.clone(), acl("User:a", Topic, "orders.eu", Prefixed, Write, Deny)]),
            "a longer one"
        );
        assert!(some(&[allow_prefix.clone(), acl("User:b", Topic, "*", Literal, Write, Deny)]), "another's deny");
        assert!(some(&[allow_prefix.clone(), acl("User:a", Topic, "*", Literal, Read, Deny)]), "a denied read");
        let allow_one = acl("User:a", Topic, "t", Literal, Write, Allow);
        assert!(!some(&[allow_one.clone(), acl("User:a", Topic, "t", Literal, Write, Deny)]));
        assert!(!some(&[allow_one.clone(), acl("User:a", Topic, "t", Prefixed, Write, Deny)]), "a prefix of it");
        assert!(some(&[allow_one.clone(), acl("User:a", Topic, "u", Literal, Write, Deny)]));
        let allow_all = acl("User:*", Topic, "*", Literal, Write, Allow);
        assert!(some(&[allow_all.clone(), acl("User:a", Topic, "t", Prefixed, Write, Deny)]), "names outside t");
        assert!(some(&[allow_one, allow_all.clone(), acl("User:a", Topic, "t", Literal, Write, Deny)]));
    }

    #[test]
    fn words_read_back_and_bad_ones_say_what_is_accepted() {
        for op in Operation::ALL {
            assert_eq!(op.as_str().to_uppercase().parse::<Operation>(), Ok(*op));
        }
        let err = "reed".parse::<Operation>().expect_err("not an operation");
        assert!(err.contains("read") && err.contains("describe"), "{err}");
        let bad = acl("alice", Topic, "t", Literal, Read, Allow);
        assert!(bad.validate().expect_err("no User:").contains("User:NAME"));
        assert!(acl("User:a", Topic, "", Literal, Read, Allow).validate().is_err());
        assert!(acl("User:a", Topic, "*", Prefixed, Read, Allow).validate().is_err());
        assert!(acl("User:a", Cluster, "", Literal, Alter, Allow).validate().is_ok());
    }

    #[test]
    fn a_filter_selects_by_each_field_it_sets() {
        let a = acl("User:a", Topic, "t", Literal, Read, Allow);
        assert!(AclFilter::default().matches(&a));
        assert!(AclFilter { principal: Some("User:a".into()), ..AclFilter::default() }.matches(&a));
        assert!(!AclFilter { operation: Some(Write), ..AclFilter::default() }.matches(&a));
        assert!(!AclFilter { resource_name: Some("t2".into()), ..AclFilter::default() }.matches(&a));
    }
}
