//! The checker's rules: one table, from which `modcsi backend check --rules` prints the
//! reference in docs/backend-authors.md. Each rule but `loads` has a test component that breaks
//! it (backends/test-programs/check-breaker, `break = "<rule>"`); `loads` is broken by files
//! that are not components (tests/tests/integration/backend_check.rs).

use crate::runtime::Optional;

/// One promise a backend makes to the host, checked by `modcsi backend check`.
#[derive(Debug)]
pub struct Rule {
    pub id: &'static str,
    /// The optional interface the rule needs; core rules apply to every backend.
    pub needs: Option<Optional>,
    /// What is checked, in one or two sentences.
    pub checks: &'static str,
}

/// Every rule, in the order the checker runs them.
pub const RULES: &[Rule] = &[
    Rule {
        id: "loads",
        needs: None,
        checks: "The file is a component of a contract version this host serves, exports \
                 identity and controller, and imports nothing the host does not provide.",
    },
    Rule {
        id: "describes-itself",
        needs: None,
        checks: "`info` names the backend and its version, offers at least one access mode and \
                 one volume mode, and lists each StorageClass parameter once, by a name.",
    },
    Rule {
        id: "probe",
        needs: None,
        checks: "`probe` answers ready.",
    },
    Rule {
        id: "create",
        needs: None,
        checks: "CreateVolume with a declared capability answers a volume the host accepts: a \
                 usable id, a capacity within the requested range, a context within 4 KiB \
                 without `modcsi.io/` keys, a valid attachment.",
    },
    Rule {
        id: "create-idempotent",
        needs: None,
        checks: "The same CreateVolume again answers the same volume (id and capacity).",
    },
    Rule {
        id: "declarations-match",
        needs: None,
        checks: "What `info` declares is what the backend does: a backend declaring topology \
                 says where each volume is reachable, one not declaring it says nothing; a \
                 snapshot content source comes with the snapshots interface.",
    },
    Rule {
        id: "required-parameters",
        needs: None,
        checks: "A CreateVolume missing a parameter `info` marks required is INVALID_ARGUMENT \
                 naming the parameter.",
    },
    Rule {
        id: "parameters",
        needs: Some(Optional::Parameters),
        checks: "`validate-parameters` finds nothing wrong with the parameters CreateVolume is \
                 asked with, and names a parameter the backend does not read.",
    },
    Rule {
        id: "huge-volume",
        needs: None,
        checks: "A CreateVolume of 1 EiB is refused with OUT_OF_RANGE, RESOURCE_EXHAUSTED or \
                 INVALID_ARGUMENT, or made in full; never another error or a trap.",
    },
    Rule {
        id: "validate",
        needs: None,
        checks: "ValidateVolumeCapabilities confirms the capability the volume was created \
                 with.",
    },
    Rule {
        id: "validate-unknown",
        needs: None,
        checks: "ValidateVolumeCapabilities of a volume the backend never made is NOT_FOUND.",
    },
    Rule {
        id: "locate",
        needs: Some(Optional::Locate),
        checks: "`locate` of the created volume answers a valid attachment, the one CreateVolume \
                 answered when it answered one.",
    },
    Rule {
        id: "get-volume",
        needs: Some(Optional::GetVolume),
        checks: "`get-volume` finds the created volume with at least its capacity, and answers \
                 NOT_FOUND for a volume the backend never made.",
    },
    Rule {
        id: "list-volumes",
        needs: Some(Optional::ListVolumes),
        checks: "ListVolumes pages hold at most max_entries volumes with usable ids, and \
                 following their tokens finds the created volume.",
    },
    Rule {
        id: "capacity",
        needs: Some(Optional::Capacity),
        checks: "GetCapacity answers for a declared capability, its minimum volume size not \
                 above its maximum.",
    },
    Rule {
        id: "pool",
        needs: Some(Optional::Pool),
        checks: "`get-pool` answers a pool that holds something, and at least what is free in it.",
    },
    Rule {
        id: "node-identity",
        needs: Some(Optional::NodeIdentity),
        checks: "`node-identity` answers a usable node id when it names one, attributes within \
                 4 KiB, and topology only when `info` declares topology.",
    },
    Rule {
        id: "publish",
        needs: Some(Optional::Publish),
        checks: "ControllerPublish to a node answers a context and attachment the host accepts, \
                 and the same again; ControllerUnpublish succeeds, and again.",
    },
    Rule {
        id: "publish-unknown",
        needs: Some(Optional::Publish),
        checks: "ControllerPublish of a volume the backend never made is NOT_FOUND.",
    },
    Rule {
        id: "expand",
        needs: Some(Optional::Expand),
        checks: "Expanding the volume to twice its size answers at least that, and the same \
                 expansion again answers the same.",
    },
    Rule {
        id: "snapshots",
        needs: Some(Optional::Snapshots),
        checks: "CreateSnapshot of the volume answers a usable id naming the volume as its \
                 source, the same name again the same snapshot; ListSnapshots by id finds it; \
                 DeleteSnapshot succeeds, and again.",
    },
    Rule {
        id: "delete",
        needs: None,
        checks: "DeleteVolume of the created volume succeeds; again, and for a volume the \
                 backend never made, it succeeds or is NOT_FOUND.",
    },
];

/// The rules as a Markdown table, for docs/backend-authors.md.
pub fn markdown() -> String {
    let mut out = String::from("| rule | applies to | checks |\n|---|---|---|\n");
    for rule in RULES {
        let needs = rule
            .needs
            .map_or("every backend".to_owned(), |i| format!("`{}`", i.name()));
        out.push_str(&format!("| `{}` | {needs} | {} |\n", rule.id, rule.checks));
    }
    out
}
