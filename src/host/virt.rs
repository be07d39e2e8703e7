//! Is the machine a VM (`system_virtual`), and which hypervisor? Readable without root and from
//! inside a container: DMI strings and `/proc`/`/sys` files are world-readable, and CPUID is an
//! unprivileged instruction that containers do not hide.
//!
//! The order is systemd's `detect_vm()` (systemd `src/basic/virt.c`), and the names are its
//! names (`kvm`, `vmware`, `oracle`, `microsoft`, `amazon`, ...), so the answer can be checked
//! against `systemd-detect-virt --vm`:
//!
//! 1. DMI (`product_name`, `sys_vendor`, `board_vendor`, `bios_vendor`, `product_version`,
//!    first prefix match in systemd's vendor table); VirtualBox, Xen, Amazon, Parallels and
//!    Google win at once, even over CPUID (they run on KVM or cloak as Hyper-V). Amazon EC2 is
//!    bare metal when SMBIOS says so, or, unreadable without root, when `product_name`
//!    contains `.metal`.
//! 2. User-Mode Linux (`/proc/cpuinfo`), then Xen (`/proc/xen`, a dom0 is not a guest).
//! 3. CPUID: the hypervisor bit and the vendor signature. `Microsoft Hv` is only a hint (QEMU
//!    offers Hyper-V enlightenments too), decided at the end.
//! 4. Any other DMI match, then `/sys/hypervisor/type`, then the device tree (ARM, POWER).
//!
//! CPUID describes the CPU this process runs on, not a fixture tree: it is used only with
//! `--root /`, and `BUTLER_HOST_NO_CPUID=1` switches it off.

use super::{CpuidVm, Roots, Syscalls, exists, read_text, read_trimmed};

/// The VM verdict: `hypervisor` is `None` on bare metal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vm {
    pub(crate) hypervisor: Option<String>,
    pub(crate) rule: String,
}

const DMI_FILES: &[&str] = &[
    // product_name before sys_vendor, so KVM is found before QEMU.
    "product_name",
    "sys_vendor",
    "board_vendor",
    "bios_vendor",
    "product_version",
];

/// systemd's DMI vendor table: prefix → hypervisor.
const DMI_VENDORS: &[(&str, &str)] = &[
    ("KVM", "kvm"),
    ("OpenStack", "kvm"),
    ("KubeVirt", "kvm"),
    ("Amazon EC2", "amazon"),
    ("QEMU", "qemu"),
    ("VMware", "vmware"),
    ("VMW", "vmware"),
    ("innotek GmbH", "oracle"),
    ("VirtualBox", "oracle"),
    ("Oracle Corporation", "oracle"),
    ("Xen", "xen"),
    ("Bochs", "bochs"),
    ("Parallels", "parallels"),
    ("BHYVE", "bhyve"),
    ("Hyper-V", "microsoft"),
    ("Apple Virtualization", "apple"),
    ("Google Compute Engine", "google"),
];

/// systemd's CPUID vendor table.
const CPUID_VENDORS: &[(&str, &str)] = &[
    ("XenVMMXenVMM", "xen"),
    ("KVMKVMKVM", "kvm"),
    ("Linux KVM Hv", "kvm"),
    ("TCGTCGTCGTCG", "qemu"),
    ("VMwareVMware", "vmware"),
    ("Microsoft Hv", "microsoft"),
    ("bhyve bhyve ", "bhyve"),
    ("QNXQVMBSQG", "qnx"),
    ("ACRNACRNACRN", "acrn"),
    ("SRESRESRESRE", "sre"),
    ("Apple VZ", "apple"),
];

fn vm(h: &str, rule: String) -> Vm {
    Vm {
        hypervisor: Some(h.to_string()),
        rule,
    }
}

/// Runs the rules in systemd's order.
pub(crate) fn detect(roots: &Roots, sys: &dyn Syscalls) -> Vm {
    let dmi = dmi(roots);
    if let Some((h, rule)) = &dmi {
        if ["oracle", "xen", "amazon", "parallels", "google"].contains(&h.as_str()) {
            return vm(h, rule.clone());
        }
    }
    if let Some((h, rule)) = &dmi {
        if h == "none" {
            // Amazon EC2 .metal: decided, bare metal.
            return Vm {
                hypervisor: None,
                rule: rule.clone(),
            };
        }
    }

    let cpuinfo = roots.proc.join("cpuinfo");
    if read_text(&cpuinfo).is_some_and(|t| is_uml(&t)) {
        return vm(
            "uml",
            format!("vendor_id \"User Mode Linux\" in {}", cpuinfo.display()),
        );
    }

    let mut xen_dom0 = false;
    if exists(&roots.proc.join("xen")) {
        if is_xen_dom0(roots) {
            xen_dom0 = true;
        } else {
            return vm("xen", "/proc/xen exists (a Xen guest)".into());
        }
    }

    let mut hyperv = None;
    let mut other = None;
    if roots.env.cpuid {
        match sys.cpuid() {
            Some(CpuidVm::Vendor(sig)) => match CPUID_VENDORS.iter().find(|(s, _)| *s == sig) {
                Some((_, "microsoft")) => hyperv = Some(format!("CPUID hypervisor vendor {sig:?}")),
                Some((_, h)) => return vm(h, format!("CPUID hypervisor vendor {sig:?}")),
                None => other = Some(format!("CPUID hypervisor bit set, unknown vendor {sig:?}")),
            },
            Some(CpuidVm::NoHypervisor) | None => {}
        }
    }
    if xen_dom0 {
        return Vm {
            hypervisor: None,
            rule: "Xen dom0 (the hardware domain is not a guest)".into(),
        };
    }

    match dmi {
        Some((h, rule)) if h == "vm-other" => other = other.or(Some(rule)),
        Some((h, rule)) => return vm(&h, rule),
        None => {}
    }

    let hv_type = roots.sys.join("hypervisor/type");
    if let Some(t) = read_trimmed(&hv_type) {
        if t == "xen" {
            return vm("xen", format!("{} says xen", hv_type.display()));
        }
        other = other.or(Some(format!("{} says {t:?}", hv_type.display())));
    }

    let dt = roots.proc.join("device-tree/hypervisor/compatible");
    if let Some(c) = read_trimmed(&dt) {
        let c = c.trim_end_matches('\0');
        let h = if c == "linux,kvm" {
            "kvm"
        } else if c.contains("xen") {
            "xen"
        } else if c.contains("vmware") {
            "vmware"
        } else {
            "vm-other"
        };
        return vm(h, format!("{} says {c:?}", dt.display()));
    }

    if let Some(rule) = hyperv {
        return vm("microsoft", rule);
    }
    if let Some(rule) = other {
        return vm("vm-other", rule);
    }
    Vm {
        hypervisor: None,
        rule: if roots.env.cpuid {
            "no hypervisor in DMI, CPUID, /proc/xen, /sys/hypervisor or the device tree".into()
        } else {
            "no hypervisor in DMI, /proc/xen, /sys/hypervisor or the device tree (CPUID not used)"
                .into()
        },
    }
}

/// First DMI file whose value starts with a known vendor; `("none", rule)` for Amazon bare
/// metal, `("vm-other", rule)` when only the SMBIOS VM bit says so.
fn dmi(roots: &Roots) -> Option<(String, String)> {
    let dir = roots.sys.join("class/dmi/id");
    let mut found = None;
    for file in DMI_FILES {
        let Some(value) = read_trimmed(&dir.join(file)) else {
            continue;
        };
        if let Some((_, h)) = DMI_VENDORS.iter().find(|(p, _)| value.starts_with(p)) {
            found = Some((h.to_string(), format!("DMI {file} {value:?}")));
            break;
        }
    }
    let smbios = smbios_vm_bit(roots);
    match found {
        Some((h, rule)) if h == "amazon" => Some(match smbios {
            Some(true) => (h, format!("{rule}, SMBIOS VM bit set")),
            Some(false) => (
                "none".into(),
                format!("{rule}, SMBIOS VM bit clear: bare metal"),
            ),
            None => {
                let name = read_trimmed(&dir.join("product_name")).unwrap_or_default();
                if is_metal(&name) {
                    (
                        "none".into(),
                        format!("{rule}, product_name {name:?} is .metal: bare metal"),
                    )
                } else {
                    (h, rule)
                }
            }
        }),
        Some(f) => Some(f),
        None if smbios == Some(true) => Some((
            "vm-other".into(),
            "SMBIOS BIOS characteristics say virtual machine".into(),
        )),
        None => None,
    }
}

/// systemd: `.metal` followed by the end or `-` (e.g. `c5.metal`, `m7i.metal-24xl`).
pub fn is_metal(product_name: &str) -> bool {
    product_name
        .match_indices(".metal")
        .any(|(i, m)| matches!(product_name[i + m.len()..].chars().next(), None | Some('-')))
}

/// SMBIOS BIOS Characteristics Extension Byte 2, bit 4 ("virtual machine"); root-only.
fn smbios_vm_bit(roots: &Roots) -> Option<bool> {
    let raw = super::read_bytes(&roots.sys.join("firmware/dmi/entries/0-0/raw"))?;
    if raw.len() < 20 || raw[1] < 20 {
        return None;
    }
    Some(raw[19] & (1 << 4) != 0)
}

fn is_uml(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id\t: "))
        .is_some_and(|v| v.starts_with("User Mode Linux"))
}

fn is_xen_dom0(roots: &Roots) -> bool {
    const XENFEAT_DOM0: u32 = 11;
    if let Some(f) = read_trimmed(&roots.sys.join("hypervisor/properties/features")) {
        if let Ok(bits) = u64::from_str_radix(f.trim_start_matches("0x"), 16) {
            return bits & (1 << XENFEAT_DOM0) != 0;
        }
    }
    read_trimmed(&roots.proc.join("xen/capabilities"))
        .is_some_and(|c| c.split(',').any(|w| w.trim() == "control_d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metal_names() {
        assert!(is_metal("c5.metal"));
        assert!(is_metal("m7i.metal-24xl"));
        assert!(!is_metal("c5.large"));
        assert!(!is_metal("c5.metalx"));
    }

    #[test]
    fn uml() {
        assert!(is_uml("processor\t: 0\nvendor_id\t: User Mode Linux\n"));
        assert!(!is_uml("processor\t: 0\nvendor_id\t: GenuineIntel\n"));
    }
}
