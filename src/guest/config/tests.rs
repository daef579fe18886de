use super::*;
use alloc::string::ToString;
use alloc::vec;

const M: u64 = 1 << 20;

fn parse_str(text: &str) -> Result<VmConfig, ConfigError> {
    parse(text.as_bytes(), "linux")
}

/// A minimal valid config plus `extra` lines.
fn with(extra: &str) -> Result<VmConfig, ConfigError> {
    parse_str(&alloc::format!("kernel = \"Image\"\n{extra}\n"))
}

fn err(extra: &str) -> ConfigError {
    with(extra).unwrap_err()
}

#[test]
fn applies_every_default_to_a_minimal_config() {
    let c = with("").unwrap();
    assert_eq!(
        c,
        VmConfig {
            name: "linux".to_string(),
            kernel: "Image".to_string(),
            initrd: None,
            dtb: None,
            bootargs: "console=ttyAMA0 earlycon".to_string(),
            memory: 512 * M,
            cpus: 1,
            physical_cpus: None,
            weight: 256,
            timeslice_us: 4000,
            ram_base: Ipa::new(0x4000_0000),
            identity_ram: false,
            devices: vec![],
            console: Console::Pl011,
            autostart: true,
            on_reset: OnReset::Restart,
            spis: 64,
            net: vec![],
            disks: vec![],
        }
    );
}

#[test]
fn identity_ram_excludes_ram_base_and_lifts_the_device_ram_overlap_check() {
    assert_eq!(
        err("identity_ram = true\nram_base = 0x8000_0000"),
        ConfigError::Exclusive {
            keys: ["ram_base", "identity_ram"]
        }
    );
    // A device at the default RAM base would overlap RAM there; with identity RAM the RAM's
    // place is decided when the VM is built.
    let dev = "[[devices]]\nname = \"d\"\nbase = 0x0a003000\nsize = \"4K\"\nipa = 0x40000000";
    assert!(matches!(err(dev), ConfigError::Overlap { .. }));
    let c = with(&format!("identity_ram = true\n{dev}")).unwrap();
    assert!(c.identity_ram);
    assert!(err("identity_ram = 1").to_string().contains("identity_ram"));
}

#[test]
fn reads_every_key() {
    let text = r#"
name = "web-1"
kernel = "boot/Image"
initrd = "./initramfs.cpio.gz"
dtb = "guest.dtb"
bootargs = "console=ttyAMA0 root=/dev/ram0"
memory = "1536M"
cpus = 2
physical_cpus = [3, 2]
weight = 768
timeslice_us = 10_000
ram_base = 0x8000_0000
console = "none"
autostart = false
on_reset = "stop"
spis = 96

[[devices]]
name = "eth"
base = 0xfd58_0000
size = "64K"
interrupts = [29, 30]

[[devices]]
name = "gpio"
base = 0xfe20_0000
size = 4096
ipa = 0x0a00_0000
"#;
    let c = parse_str(text).unwrap();
    assert_eq!(c.name, "web-1");
    assert_eq!(c.kernel, "boot/Image");
    assert_eq!(c.initrd.as_deref(), Some("initramfs.cpio.gz"));
    assert_eq!(c.dtb.as_deref(), Some("guest.dtb"));
    assert_eq!(c.bootargs, "console=ttyAMA0 root=/dev/ram0");
    assert_eq!(c.memory, 1536 * M);
    assert_eq!(c.cpus, 2);
    assert_eq!(c.physical_cpus, Some(vec![3, 2]));
    assert_eq!((c.weight, c.timeslice_us), (768, 10_000));
    assert_eq!(c.ram_base, Ipa::new(0x8000_0000));
    assert_eq!(c.console, Console::None);
    assert!(!c.autostart);
    assert_eq!(c.on_reset, OnReset::Stop);
    assert_eq!(c.spis, 96);
    assert_eq!(
        c.devices,
        vec![
            DeviceConfig {
                name: "eth".to_string(),
                base: PhysAddr::new(0xfd58_0000),
                size: 0x1_0000,
                ipa: Ipa::new(0xfd58_0000),
                compatible: Vec::new(),
                interrupts: vec![29, 30],
            },
            DeviceConfig {
                name: "gpio".to_string(),
                base: PhysAddr::new(0xfe20_0000),
                size: 0x1000,
                ipa: Ipa::new(0x0a00_0000),
                compatible: Vec::new(),
                interrupts: vec![],
            },
        ]
    );
}

#[test]
fn accepts_memory_in_every_documented_form() {
    for (v, bytes) in [
        ("\"512M\"", 512 * M),
        ("\"1G\"", 1024 * M),
        ("\"1536M\"", 1536 * M),
        ("\"1536m\"", 1536 * M),
        ("\"2GiB\"", 2048 * M),
        ("\"64MB\"", 64 * M),
        ("\"65536K\"", 64 * M),
        ("\" 34M \"", 34 * M),
        ("33554432", 32 * M),
        ("\"33554432\"", 32 * M),
    ] {
        assert_eq!(
            with(&alloc::format!("memory = {v}")).unwrap().memory,
            bytes,
            "{v}"
        );
    }
}

#[test]
fn rejects_bad_memory_sizes_naming_the_problem() {
    let problem = |v: &str| match err(&alloc::format!("memory = {v}")) {
        ConfigError::BadSize { key, problem, .. } if key == "memory" => problem,
        other => panic!("{v}: {other:?}"),
    };
    assert_eq!(problem("\"lots\""), SizeProblem::Syntax);
    assert_eq!(problem("\"512X\""), SizeProblem::Syntax);
    assert_eq!(problem("\"512Mx\""), SizeProblem::Syntax);
    assert_eq!(problem("\"M\""), SizeProblem::Syntax);
    assert_eq!(problem("\"\""), SizeProblem::Syntax);
    assert_eq!(problem("\"-1G\""), SizeProblem::Negative);
    assert_eq!(problem("-4096"), SizeProblem::Negative);
    assert_eq!(problem("\"99999999999999999999\""), SizeProblem::Overflow);
    assert_eq!(problem("\"99999999999T\""), SizeProblem::Overflow);
    assert_eq!(problem("\"30M\""), SizeProblem::TooSmall(32 * M));
    assert_eq!(problem("33554433"), SizeProblem::NotMultiple(4096));
    assert_eq!(problem("\"40000001\""), SizeProblem::NotMultiple(4096));
    // Any whole number of pages is accepted, as for KVM.
    assert_eq!(with("memory = \"33M\"").unwrap().memory, 33 * M);
    assert_eq!(
        with("memory = 34607104").unwrap().memory,
        32 * M + 4096 * 257
    );
    assert!(matches!(
        err("memory = true"),
        ConfigError::Toml { key: Some(k), line: 2, .. } if k == "memory"
    ));
    // 1 TiB of RAM at 1 GiB runs past the 40-bit IPA space.
    assert_eq!(
        err("memory = \"1T\""),
        ConfigError::OutsideIpaSpace {
            key: "memory".to_string()
        }
    );
}

#[test]
fn reports_an_unknown_key_with_its_line() {
    assert_eq!(
        err("cpu = 2"),
        ConfigError::UnknownKey {
            key: "cpu".to_string(),
            line: 2
        }
    );
    assert_eq!(
        err("[[devices]]\nname = \"x\"\nbase = 0\nsize = 4096\nirq = [1]"),
        ConfigError::UnknownKey {
            key: "irq".to_string(),
            line: 6
        }
    );
    assert_eq!(
        err("[extra]\na = 1"),
        ConfigError::UnknownKey {
            key: "extra".to_string(),
            line: 2
        }
    );
}

#[test]
fn rejects_a_nul_in_bootargs() {
    assert_eq!(
        err("bootargs = \"a\\u0000b\""),
        ConfigError::NulInString { key: "bootargs" }
    );
}

#[test]
fn requires_the_kernel() {
    assert_eq!(parse_str("cpus = 1\n"), Err(ConfigError::MissingKernel));
    assert_eq!(parse_str(""), Err(ConfigError::MissingKernel));
}

#[test]
fn requires_device_name_base_and_size() {
    assert_eq!(
        err("[[devices]]\nname = \"x\"\nsize = 4096"),
        ConfigError::MissingKey {
            key: "base".to_string(),
            line: 2
        }
    );
    assert!(matches!(
        err("[[devices]]\nbase = 0\nsize = 4096"),
        ConfigError::MissingKey { key, .. } if key == "name"
    ));
}

#[test]
fn reports_syntax_errors_and_wrong_types_with_position() {
    assert_eq!(
        err("cpus = \"two\""),
        ConfigError::Toml {
            key: Some("cpus".to_string()),
            line: 2,
            column: 8,
            message: "invalid type: string \"two\", expected i64".to_string()
        }
    );
    assert!(matches!(
        err("kernel2 = "),
        ConfigError::Toml { line: 2, .. }
    ));
    assert!(matches!(
        parse_str("kernel = \"Image"),
        Err(ConfigError::Toml { line: 1, .. })
    ));
    assert!(matches!(
        err("kernel = \"Other\""),
        ConfigError::Toml { key: Some(k), .. } if k == "kernel"
    ));
    assert_eq!(parse(b"kernel = \"\xff\"", "x"), Err(ConfigError::NotUtf8));
}

#[test]
fn validates_the_name_and_defaults_it_to_the_folder() {
    assert_eq!(parse(b"kernel = \"I\"", "vm2").unwrap().name, "vm2");
    for bad in ["", "has space", "slash/no", "..", "-x", &"x".repeat(33)] {
        assert_eq!(
            err(&alloc::format!("name = \"{bad}\"")),
            ConfigError::BadName {
                value: bad.to_string()
            }
        );
    }
    assert_eq!(
        parse(b"kernel = \"I\"", "bad folder"),
        Err(ConfigError::BadName {
            value: "bad folder".to_string()
        })
    );
    assert_eq!(
        parse(b"kernel = \"I\"\nname = \"ok\"", "bad folder")
            .unwrap()
            .name,
        "ok"
    );
}

#[test]
fn rejects_paths_leaving_the_vm_folder() {
    let path = |key: &str, v: &str| {
        let text = if key == "kernel" {
            alloc::format!("kernel = \"{v}\"")
        } else {
            alloc::format!("kernel = \"Image\"\n{key} = \"{v}\"")
        };
        parse_str(&text)
    };
    for (key, v, problem) in [
        ("kernel", "/boot/Image", PathProblem::Absolute),
        ("kernel", "../other/Image", PathProblem::ParentComponent),
        ("initrd", "a/../../b", PathProblem::ParentComponent),
        ("dtb", "", PathProblem::Empty),
        ("dtb", "./.", PathProblem::Empty),
        ("initrd", "a//b", PathProblem::Malformed),
        ("kernel", "dir/", PathProblem::Malformed),
    ] {
        match path(key, v) {
            Err(ConfigError::BadPath {
                key: k,
                path,
                problem: p,
            }) => {
                assert_eq!((k.as_str(), path.as_str(), p), (key, v, problem));
            }
            other => panic!("{key} = {v}: {other:?}"),
        }
    }
    assert_eq!(
        path("kernel", "./boot/./Image").unwrap().kernel,
        "boot/Image"
    );
}

#[test]
fn checks_cpus_and_physical_cpus() {
    assert_eq!(
        err("cpus = 0"),
        ConfigError::OutOfRange {
            key: "cpus".to_string(),
            value: 0,
            min: 1,
            max: 64
        }
    );
    assert_eq!(
        err("cpus = 65"),
        ConfigError::OutOfRange {
            key: "cpus".to_string(),
            value: 65,
            min: 1,
            max: 64
        }
    );
    assert_eq!(with("cpus = 64").unwrap().cpus, 64);
    assert_eq!(
        err("cpus = 2\nphysical_cpus = [1]"),
        ConfigError::PhysicalCpusLength { cpus: 2, listed: 1 }
    );
    // A CPU may be named twice: the two vCPUs share it (admission decides whether CPUs are
    // shared).
    assert_eq!(
        with("cpus = 4\nphysical_cpus = [0, 1, 0, 1]")
            .unwrap()
            .physical_cpus,
        Some(vec![0, 1, 0, 1])
    );
    assert_eq!(
        err("physical_cpus = [-1]"),
        ConfigError::OutOfRange {
            key: "physical_cpus[0]".to_string(),
            value: -1,
            min: 0,
            max: 1023
        }
    );
}

#[test]
fn checks_weight_and_timeslice() {
    assert_eq!(with("weight = 1").unwrap().weight, 1);
    assert_eq!(with("weight = 65535").unwrap().weight, 65535);
    for bad in [0, -256, 65536] {
        assert_eq!(
            err(&alloc::format!("weight = {bad}")),
            ConfigError::OutOfRange {
                key: "weight".to_string(),
                value: bad,
                min: 1,
                max: 65535
            }
        );
    }
    assert_eq!(with("timeslice_us = 100").unwrap().timeslice_us, 100);
    assert_eq!(with("timeslice_us = 100000").unwrap().timeslice_us, 100_000);
    for bad in [99, 0, 100_001] {
        assert_eq!(
            err(&alloc::format!("timeslice_us = {bad}")),
            ConfigError::OutOfRange {
                key: "timeslice_us".to_string(),
                value: bad,
                min: 100,
                max: 100_000
            }
        );
    }
    assert!(matches!(
        err("weight = \"heavy\""),
        ConfigError::Toml { key: Some(k), .. } if k == "weight"
    ));
    let msg = err("timeslice_us = 5").to_string();
    assert!(
        msg.contains("`timeslice_us`") && msg.contains("100..=100000"),
        "{msg}"
    );
}

#[test]
fn checks_ram_base_alignment_and_range() {
    assert_eq!(
        err("ram_base = 0x4010_0800"),
        ConfigError::Unaligned {
            key: "ram_base".to_string(),
            value: 0x4010_0800,
            align: 4096
        }
    );
    assert_eq!(
        with("ram_base = 0x4010_1000").unwrap().ram_base,
        Ipa::new(0x4010_1000)
    );
    assert!(matches!(
        err("ram_base = -2097152"),
        ConfigError::OutOfRange { .. }
    ));
    assert_eq!(
        with("ram_base = 0\nmemory = \"128M\"").unwrap().ram_base,
        Ipa::new(0)
    );
    assert_eq!(
        err("ram_base = 0\nmemory = \"130M\""),
        ConfigError::Overlap {
            key: "memory".to_string(),
            with: EMULATED_DEVICES.to_string()
        }
    );
    // RAM may start right after the emulated devices, but not on QEMU virt's virtio-mmio
    // window (0xa000000..0xa004000) nor run into it.
    assert_eq!(
        err("ram_base = 0xa000000\nmemory = \"64M\""),
        ConfigError::Overlap {
            key: "memory".to_string(),
            with: crate::guest::config::VIRTIO_MMIO_SLOTS.to_string()
        }
    );
    assert_eq!(
        with("ram_base = 0xa004000\nmemory = \"64M\"")
            .unwrap()
            .ram_base,
        Ipa::new(0x0a00_4000)
    );
    assert_eq!(
        err("ram_base = 0xff_ffe0_0000"),
        ConfigError::OutsideIpaSpace {
            key: "memory".to_string()
        }
    );
}

#[test]
fn checks_spis_console_and_on_reset() {
    assert_eq!(
        err("spis = 33"),
        ConfigError::SpisNotMultipleOf32 { spis: 33 }
    );
    assert!(matches!(err("spis = 0"), ConfigError::OutOfRange { .. }));
    assert!(matches!(err("spis = 992"), ConfigError::OutOfRange { .. }));
    assert_eq!(with("spis = 960").unwrap().spis, 960);
    assert_eq!(
        err("console = \"serial\""),
        ConfigError::BadChoice {
            key: "console",
            value: "serial".to_string(),
            allowed: &["pl011", "none"]
        }
    );
    assert_eq!(with("console = \"pl011\"").unwrap().console, Console::Pl011);
    assert!(matches!(
        err("on_reset = \"reboot\""),
        ConfigError::BadChoice {
            key: "on_reset",
            ..
        }
    ));
    assert_eq!(
        with("on_reset = \"restart\"").unwrap().on_reset,
        OnReset::Restart
    );
    assert!(
        matches!(err("autostart = 1"), ConfigError::Toml { key: Some(k), .. } if k == "autostart")
    );
}

fn device(body: &str) -> String {
    alloc::format!("[[devices]]\nname = \"d\"\n{body}")
}

#[test]
fn validates_passthrough_devices() {
    assert_eq!(
        err(&device("base = 0x1001\nsize = 4096")),
        ConfigError::Unaligned {
            key: "devices[0].base".to_string(),
            value: 0x1001,
            align: 4096
        }
    );
    assert!(matches!(
        err(&device("base = 0x1000\nsize = 0")),
        ConfigError::BadSize { key, problem: SizeProblem::TooSmall(4096), .. } if key == "devices[0].size"
    ));
    assert!(matches!(
        err(&device("base = 0x1000\nsize = 100")),
        ConfigError::BadSize {
            problem: SizeProblem::NotMultiple(4096),
            ..
        }
    ));
    assert_eq!(
        err(&device("base = 0x1000\nsize = 4096\nipa = 0x1800")),
        ConfigError::Unaligned {
            key: "devices[0].ipa".to_string(),
            value: 0x1800,
            align: 4096
        }
    );
    assert_eq!(
        err(&device("base = 0x4100_0000\nsize = 4096")),
        ConfigError::Overlap {
            key: "devices[0].ipa".to_string(),
            with: "memory".to_string()
        }
    );
    assert_eq!(
        err(&device("base = 0x0900_0000\nsize = 4096")),
        ConfigError::Overlap {
            key: "devices[0].ipa".to_string(),
            with: EMULATED_DEVICES.to_string()
        }
    );
    let moved = with(&device(
        "base = 0x0900_0000\nsize = 4096\nipa = 0x0a00_0000",
    ))
    .unwrap();
    assert_eq!(moved.devices[0].ipa, Ipa::new(0x0a00_0000));
    assert_eq!(
        err(&device(
            "base = 0x0a00_0000\nsize = 4096\ninterrupts = [64]"
        )),
        ConfigError::OutOfRange {
            key: "devices[0].interrupts[0]".to_string(),
            value: 64,
            min: 0,
            max: 63
        }
    );
    assert_eq!(
        err(&device("base = 0x100_0000_0000\nsize = 4096")),
        ConfigError::OutsideIpaSpace {
            key: "devices[0].ipa".to_string()
        }
    );
    assert_eq!(
        err(&device("base = 0x1000\nsize = 4096\nname = \"\"")),
        ConfigError::Toml {
            key: Some("name".to_string()),
            line: 6,
            column: 1,
            message: "duplicate key".to_string()
        }
    );
    assert_eq!(
        err("[[devices]]\nname = \"\"\nbase = 0x1000\nsize = 4096"),
        ConfigError::BadName {
            value: String::new()
        }
    );
    let two = alloc::format!(
        "{}\n{}",
        device("base = 0x1000\nsize = 0x2000"),
        device("base = 0x5000\nsize = 0x1000\nipa = 0x2000")
    );
    assert_eq!(
        err(&two),
        ConfigError::Overlap {
            key: "devices[1].ipa".to_string(),
            with: "devices[0].ipa".to_string()
        }
    );
    let two = alloc::format!(
        "{}\n{}",
        device("base = 0x1000\nsize = 0x2000"),
        device("base = 0x2000\nsize = 0x1000\nipa = 0x8000")
    );
    assert_eq!(
        err(&two),
        ConfigError::Overlap {
            key: "devices[1].base".to_string(),
            with: "devices[0].base".to_string()
        }
    );
}

#[test]
fn error_messages_name_the_key() {
    let msg = err("cpus = 0").to_string();
    assert!(msg.contains("`cpus`") && msg.contains("1..=64"), "{msg}");
    let msg = err("memory = 33554433").to_string();
    assert!(
        msg.contains("`memory`") && msg.contains("multiple"),
        "{msg}"
    );
    let msg = err("memroy = \"33M\"").to_string();
    assert!(msg.contains("unknown key `memroy`"), "{msg}");
}

// ---- admit ----

fn vm(name: &str, cpus: usize, memory_mb: u64, pinned: Option<Vec<usize>>) -> VmConfig {
    let mut c = with("").unwrap();
    c.name = name.to_string();
    c.cpus = cpus;
    c.memory = memory_mb * M;
    c.physical_cpus = pinned;
    c
}

const MACHINE: MachineResources = MachineResources {
    cpus: 4,
    free_memory: 2048 * M,
    host_owned: &[],
};

fn accept(cpus: &[usize]) -> Admission {
    Admission::Accept {
        physical_cpus: cpus.to_vec(),
    }
}

#[test]
fn gives_unpinned_vms_the_lowest_free_cpus() {
    let a = vm("a", 2, 512, None);
    let b = vm("b", 1, 512, None);
    assert_eq!(admit(&[&a, &b], &MACHINE), [accept(&[0, 1]), accept(&[2])]);
}

#[test]
fn places_pinned_vms_first_and_refuses_overlapping_pins() {
    let a = vm("a", 2, 256, None);
    let b = vm("b", 1, 256, Some(vec![0]));
    let c = vm("c", 2, 256, Some(vec![3, 0]));
    assert_eq!(
        admit(&[&a, &b, &c], &MACHINE),
        [
            accept(&[1, 2]),
            accept(&[0]),
            Admission::Refuse(Refusal::CpuTaken {
                cpu: 0,
                by: "b".to_string()
            })
        ]
    );
}

#[test]
fn refuses_a_vm_that_needs_more_cpus_than_are_left_but_starts_the_others() {
    let a = vm("a", 3, 256, None);
    let b = vm("b", 2, 256, None);
    let c = vm("c", 1, 256, None);
    assert_eq!(
        admit(&[&a, &b, &c], &MACHINE),
        [
            accept(&[0, 1, 2]),
            Admission::Refuse(Refusal::NotEnoughCpus { wanted: 2, free: 1 }),
            accept(&[3])
        ]
    );
}

#[test]
fn without_sharing_a_cpu_listed_twice_is_refused() {
    let a = vm("a", 2, 256, Some(vec![1, 1]));
    let b = vm("b", 1, 256, None);
    assert_eq!(
        admit(&[&a, &b], &MACHINE),
        [
            Admission::Refuse(Refusal::CpuListedTwice { cpu: 1 }),
            accept(&[0])
        ]
    );
    assert!(
        Refusal::CpuListedTwice { cpu: 1 }
            .to_string()
            .contains("lists CPU 1 twice")
    );
}

fn shared(vms: &[&VmConfig], machine: &MachineResources) -> Vec<Admission> {
    admit_alongside(&[], vms, machine, CpuSharing::Shared)
}

/// Eight single-vCPU VMs on four CPUs: all accepted, two per CPU.
#[test]
fn with_sharing_more_vcpus_than_cpus_are_accepted_and_spread() {
    let names: Vec<String> = (0..8).map(|i| alloc::format!("vm{i}")).collect();
    let configs: Vec<VmConfig> = names.iter().map(|n| vm(n, 1, 128, None)).collect();
    let refs: Vec<&VmConfig> = configs.iter().collect();
    let v = shared(&refs, &MACHINE);
    let cpus: Vec<usize> = v
        .iter()
        .map(|a| match a {
            Admission::Accept { physical_cpus } => physical_cpus[0],
            r => panic!("{r:?}"),
        })
        .collect();
    assert_eq!(cpus, [0, 1, 2, 3, 0, 1, 2, 3]);
    // A 4-vCPU VM on 2 CPUs.
    let big = vm("big", 4, 512, None);
    let two = MachineResources { cpus: 2, ..MACHINE };
    assert_eq!(shared(&[&big], &two), [accept(&[0, 1, 0, 1])]);
}

#[test]
fn with_sharing_pins_may_overlap_and_the_rest_goes_to_the_least_weight() {
    let mut heavy = vm("heavy", 1, 256, Some(vec![0]));
    heavy.weight = 1024;
    let b = vm("b", 2, 256, Some(vec![0, 1]));
    let c = vm("c", 2, 256, Some(vec![1, 1]));
    let d = vm("d", 3, 256, None);
    // Pinned first: CPU 0 has 1024 + 256, CPU 1 has 256 * 3; d takes 2, 3, then CPU 1.
    assert_eq!(
        shared(&[&d, &heavy, &b, &c], &MACHINE),
        [
            accept(&[2, 3, 1]),
            accept(&[0]),
            accept(&[0, 1]),
            accept(&[1, 1])
        ]
    );
    let nine = vm("nine", 1, 256, Some(vec![9]));
    assert_eq!(
        shared(&[&nine], &MACHINE),
        [Admission::Refuse(Refusal::CpuOutOfRange {
            cpu: 9,
            machine_cpus: 4
        })]
    );
    let none = MachineResources { cpus: 0, ..MACHINE };
    assert_eq!(
        shared(&[&d], &none),
        [Admission::Refuse(Refusal::NotEnoughCpus {
            wanted: 3,
            free: 0
        })]
    );
}

/// `start` at run time: the running VMs' names, devices and vCPUs count; the machine's free
/// memory is what is left now.
#[test]
fn admission_beside_running_vms_counts_their_names_devices_and_load() {
    let dev = DeviceConfig {
        name: "uart2".to_string(),
        base: PhysAddr::new(0xfe20_1000),
        size: 0x1000,
        ipa: Ipa::new(0xfe20_1000),
        compatible: Vec::new(),
        interrupts: vec![],
    };
    let mut web = vm("web", 2, 512, None);
    web.devices.push(dev.clone());
    let running = [Placed {
        config: &web,
        physical_cpus: &[0, 1],
    }];
    let again = vm("web", 1, 64, None);
    let mut thief = vm("thief", 1, 64, None);
    thief.devices.push(DeviceConfig {
        name: "mine".to_string(),
        ..dev
    });
    let spare = vm("spare", 2, 64, None);
    let machine = MachineResources {
        free_memory: 100 * M,
        ..MACHINE
    };
    assert_eq!(
        admit_alongside(
            &running,
            &[&again, &thief, &spare],
            &machine,
            CpuSharing::Shared
        ),
        [
            Admission::Refuse(Refusal::DuplicateName),
            Admission::Refuse(Refusal::DeviceTaken {
                device: "mine".to_string(),
                by: "web".to_string()
            }),
            accept(&[2, 3])
        ]
    );
    // Not shared: the running VM's CPUs are taken.
    let pinned = vm("pinned", 1, 64, Some(vec![1]));
    assert_eq!(
        admit_alongside(
            &running,
            &[&pinned, &spare],
            &machine,
            CpuSharing::Exclusive
        ),
        [
            Admission::Refuse(Refusal::CpuTaken {
                cpu: 1,
                by: "web".to_string()
            }),
            accept(&[2, 3])
        ]
    );
    // Memory: 100 MiB free now, whatever the running VMs hold.
    let fat = vm("fat", 1, 128, None);
    assert_eq!(
        admit_alongside(&running, &[&fat], &machine, CpuSharing::Shared),
        [Admission::Refuse(Refusal::NotEnoughMemory {
            wanted: 128 * M,
            free: 100 * M
        })]
    );
}

#[test]
fn refuses_pins_beyond_the_machine() {
    let a = vm("a", 1, 256, Some(vec![4]));
    assert_eq!(
        admit(&[&a], &MACHINE),
        [Admission::Refuse(Refusal::CpuOutOfRange {
            cpu: 4,
            machine_cpus: 4
        })]
    );
}

#[test]
fn refuses_a_vm_when_memory_runs_out() {
    let a = vm("a", 1, 1024, None);
    let b = vm("b", 1, 1536, None);
    let c = vm("c", 1, 1024, None);
    assert_eq!(
        admit(&[&a, &b, &c], &MACHINE),
        [
            accept(&[0]),
            Admission::Refuse(Refusal::NotEnoughMemory {
                wanted: 1536 * M,
                free: 1024 * M
            }),
            accept(&[1])
        ]
    );
}

#[test]
fn refuses_duplicate_names_and_devices_given_twice() {
    let a = vm("a", 1, 256, None);
    let a2 = vm("a", 1, 256, None);
    assert_eq!(
        admit(&[&a, &a2], &MACHINE),
        [accept(&[0]), Admission::Refuse(Refusal::DuplicateName)]
    );
    let dev = |name: &str, base: u64| DeviceConfig {
        name: name.to_string(),
        base: PhysAddr::new(base),
        size: 0x1000,
        ipa: Ipa::new(base),
        compatible: Vec::new(),
        interrupts: vec![],
    };
    let mut x = vm("x", 1, 256, None);
    x.devices.push(dev("uart2", 0xfe20_1000));
    let mut y = vm("y", 1, 256, None);
    y.devices.push(dev("uart2-again", 0xfe20_1000));
    let mut z = vm("z", 1, 256, None);
    z.devices.push(dev("gpio", 0xfe20_0000));
    assert_eq!(
        admit(&[&x, &y, &z], &MACHINE),
        [
            accept(&[0]),
            Admission::Refuse(Refusal::DeviceTaken {
                device: "uart2-again".to_string(),
                by: "x".to_string()
            }),
            accept(&[1])
        ]
    );
}

/// RAM (the hypervisor's and every VM's), the GIC and the console are never passed through:
/// a device overlapping one, even by a page, refuses the VM; the next VM is unaffected.
#[test]
fn devices_overlapping_what_the_hypervisor_owns_are_refused() {
    const HOST: &[HostOwned] = &[
        HostOwned {
            base: 0x4000_0000,
            size: 0x8000_0000,
            what: "RAM",
        },
        HostOwned {
            base: 0x0800_0000,
            size: 0x1_0000,
            what: "GIC distributor",
        },
        HostOwned {
            base: 0x0900_0000,
            size: 0x1000,
            what: "console UART",
        },
    ];
    let machine = MachineResources {
        host_owned: HOST,
        ..MACHINE
    };
    let with_dev = |name: &str, base: u64, size: u64| {
        let mut c = vm(name, 1, 64, None);
        c.devices.push(DeviceConfig {
            name: alloc::format!("{name}-dev"),
            base: PhysAddr::new(base),
            size,
            ipa: Ipa::new(0x0c00_0000),
            compatible: Vec::new(),
            interrupts: vec![],
        });
        c
    };
    let ram = with_dev("ram", 0x4020_0000, 0x1000);
    let ram_edge = with_dev("ram-edge", 0x3fff_f000, 0x2000);
    let gicd = with_dev("gicd", 0x0800_0000, 0x1000);
    let uart = with_dev("uart", 0x0900_0000, 0x1000);
    let rtc = with_dev("rtc", 0x0901_0000, 0x1000);
    let below_ram = with_dev("below", 0x3fff_f000, 0x1000);
    let refused = |device: &str, what: &'static str| {
        Admission::Refuse(Refusal::DeviceHostOwned {
            device: device.to_string(),
            what,
        })
    };
    assert_eq!(
        admit(&[&ram, &ram_edge, &gicd, &uart, &rtc, &below_ram], &machine),
        [
            refused("ram-dev", "RAM"),
            refused("ram-edge-dev", "RAM"),
            refused("gicd-dev", "GIC distributor"),
            refused("uart-dev", "console UART"),
            accept(&[0]),
            accept(&[1]),
        ]
    );
    let msg = Refusal::DeviceHostOwned {
        device: "gicd-dev".to_string(),
        what: "GIC distributor",
    }
    .to_string();
    assert!(
        msg.contains("gicd-dev") && msg.contains("GIC distributor"),
        "{msg}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&data, "vm");
        }

        #[test]
        fn never_panics_on_toml_like_text(
            lines in proptest::collection::vec(
                (
                    prop_oneof![
                        Just("kernel"), Just("memory"), Just("cpus"), Just("physical_cpus"),
                        Just("ram_base"), Just("spis"), Just("name"), Just("[[devices]]"),
                        Just("base"), Just("size"), Just("ipa"), Just("interrupts"), Just("bogus"),
                    ],
                    "[-\"\\[\\]0-9a-zA-Z_ ,.=/]{0,16}",
                ),
                0..10,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(k, v)| if k.starts_with('[') { alloc::format!("{k}\n") } else { alloc::format!("{k} = {v}\n") })
                .collect();
            if let Ok(c) = parse(text.as_bytes(), "vm") {
                // Whatever is accepted satisfies the documented invariants.
                prop_assert!(c.memory >= MIN_MEMORY && c.memory.is_multiple_of(MEMORY_ALIGN));
                prop_assert!((1..=MAX_VCPUS).contains(&c.cpus));
                prop_assert!(c.ram_base.is_aligned(MEMORY_ALIGN));
                prop_assert!(c.ram_base.as_u64() + c.memory <= MAX_IPA);
            }
        }

        #[test]
        fn admit_never_oversubscribes(
            vms in proptest::collection::vec((1usize..4, 32u64..1024, proptest::option::of(proptest::collection::vec(0usize..6, 1..3))), 0..6),
            cpus in 0usize..6,
            free_mb in 0u64..4096,
        ) {
            let configs: Vec<VmConfig> = vms
                .iter()
                .enumerate()
                .map(|(i, (n, mem, pins))| {
                    let mut pins = pins.clone();
                    if let Some(p) = &mut pins { p.dedup(); }
                    let n = pins.as_ref().map_or(*n, |p| p.len());
                    vm(&alloc::format!("vm{i}"), n, mem & !1, pins)
                })
                .collect();
            let refs: Vec<&VmConfig> = configs.iter().collect();
            let machine = MachineResources { cpus, free_memory: free_mb * M, host_owned: &[] };
            let verdicts = admit(&refs, &machine);
            prop_assert_eq!(verdicts.len(), configs.len());
            let mut used = Vec::new();
            let mut mem = 0;
            for (c, v) in configs.iter().zip(&verdicts) {
                if let Admission::Accept { physical_cpus } = v {
                    prop_assert_eq!(physical_cpus.len(), c.cpus);
                    for &p in physical_cpus {
                        prop_assert!(p < cpus);
                        prop_assert!(!used.contains(&p));
                        used.push(p);
                    }
                    mem += c.memory;
                }
            }
            prop_assert!(mem <= machine.free_memory);
        }

        /// With sharing, only memory, devices, names and pins beyond the machine refuse a VM;
        /// an accepted VM's pins are kept and every vCPU is on a CPU of the machine.
        #[test]
        fn admit_shared_refuses_only_for_memory_or_missing_cpus(
            vms in proptest::collection::vec((1usize..6, 32u64..1024, proptest::option::of(proptest::collection::vec(0usize..6, 1..4)), 1u32..2000), 0..8),
            cpus in 0usize..6,
            free_mb in 0u64..4096,
        ) {
            let configs: Vec<VmConfig> = vms
                .iter()
                .enumerate()
                .map(|(i, (n, mem, pins, weight))| {
                    let n = pins.as_ref().map_or(*n, |p| p.len());
                    let mut c = vm(&alloc::format!("vm{i}"), n, mem & !1, pins.clone());
                    c.weight = *weight;
                    c
                })
                .collect();
            let refs: Vec<&VmConfig> = configs.iter().collect();
            let machine = MachineResources { cpus, free_memory: free_mb * M, host_owned: &[] };
            let verdicts = admit_alongside(&[], &refs, &machine, CpuSharing::Shared);
            let mut mem = 0;
            for (c, v) in configs.iter().zip(&verdicts) {
                match v {
                    Admission::Accept { physical_cpus } => {
                        prop_assert_eq!(physical_cpus.len(), c.cpus);
                        prop_assert!(physical_cpus.iter().all(|&p| p < cpus));
                        if let Some(p) = &c.physical_cpus {
                            prop_assert_eq!(p, physical_cpus);
                        }
                        mem += c.memory;
                    }
                    Admission::Refuse(Refusal::NotEnoughMemory { .. }) => {}
                    Admission::Refuse(Refusal::CpuOutOfRange { cpu, .. }) => prop_assert!(*cpu >= cpus),
                    Admission::Refuse(Refusal::NotEnoughCpus { free: 0, .. }) => prop_assert_eq!(cpus, 0),
                    Admission::Refuse(r) => prop_assert!(false, "unexpected refusal {r:?}"),
                }
            }
            prop_assert!(mem <= machine.free_memory);
        }
    }
}

#[test]
fn the_example_guest_configs_are_valid() {
    let linux = parse(include_bytes!("../../../guests/linux/vm.toml"), "linux").unwrap();
    assert_eq!(
        (linux.name.as_str(), linux.memory, linux.cpus),
        ("linux", 512 * M, 1)
    );
    assert_eq!(linux.initrd.as_deref(), Some("initramfs.cpio.gz"));
    let linux2 = parse(include_bytes!("../../../guests/linux2/vm.toml"), "linux2").unwrap();
    assert_eq!(linux2.physical_cpus, Some(vec![2, 3]));
    assert_eq!(linux2.on_reset, OnReset::Stop);
    // Together they fit a 4-CPU machine: linux2 is pinned first, linux gets CPU 0.
    assert_eq!(
        admit(&[&linux, &linux2], &MACHINE),
        [accept(&[0]), accept(&[2, 3])]
    );
}

// ---- [[net]] and [[disks]] ----

#[test]
fn reads_net_and_disk_entries_with_their_defaults() {
    let c = with(
        "[[disks]]\nfile = \"./rootfs.ext4\"\n\
         [[disks]]\nfile = \"data.img\"\nreadonly = true\n\
         [[net]]\nswitch = \"lan0\"\n\
         [[net]]\nswitch = \"dmz\"\nmac = \"52:54:00:12:34:56\"\nmtu = 9000",
    )
    .unwrap();
    assert_eq!(
        c.disks,
        vec![
            DiskConfig {
                file: "rootfs.ext4".to_string(),
                readonly: false
            },
            DiskConfig {
                file: "data.img".to_string(),
                readonly: true
            },
        ]
    );
    assert_eq!(c.net.len(), 2);
    assert_eq!(c.net[0].switch, "lan0");
    assert_eq!(c.net[0].mac, default_mac("linux", 0));
    assert_eq!(c.net[0].mtu, None);
    assert_eq!(c.net[1].mac, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    assert_eq!(c.net[1].mtu, Some(9000));
}

#[test]
fn default_macs_are_local_unicast_and_differ_per_vm_and_port() {
    let a = default_mac("linux", 0);
    assert_eq!(a[0], 0x02, "locally administered, unicast");
    assert_ne!(a, default_mac("linux", 1));
    assert_ne!(a, default_mac("linux2", 0));
    assert_eq!(a, default_mac("linux", 0), "stable");
}

#[test]
fn bad_net_entries_name_the_key() {
    for (text, key) in [
        ("[[net]]\nswitch = \"\"", "net[0].switch"),
        ("[[net]]\nswitch = \"a b\"", "net[0].switch"),
        (
            "[[net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34\"",
            "net[0].mac",
        ),
        (
            "[[net]]\nswitch = \"lan0\"\nmac = \"52:54:00:12:34:5g\"",
            "net[0].mac",
        ),
        (
            "[[net]]\nswitch = \"lan0\"\nmac = \"01:00:5e:00:00:01\"",
            "net[0].mac",
        ),
        (
            "[[net]]\nswitch = \"lan0\"\nmac = \"00:00:00:00:00:00\"",
            "net[0].mac",
        ),
        (
            "[[net]]\nswitch = \"a\"\nmac = \"02:00:00:00:00:01\"\n[[net]]\nswitch = \"b\"\nmac = \"02:00:00:00:00:01\"",
            "net[1].mac",
        ),
    ] {
        match err(text) {
            ConfigError::BadValue { key: k, .. } => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(
        err("[[net]]\nswitch = \"lan0\"\nmtu = 67"),
        ConfigError::OutOfRange { .. }
    ));
    assert!(matches!(
        err("[[net]]\nswitch = \"lan0\"\nmtu = 65536"),
        ConfigError::OutOfRange { .. }
    ));
    assert!(matches!(
        err("[[net]]\nswitch = \"lan0\"\nspeed = 10"),
        ConfigError::UnknownKey { .. }
    ));
    assert!(matches!(
        err("[[net]]\nmac = \"02:00:00:00:00:01\""),
        ConfigError::MissingKey { .. }
    ));
    let msg = err("[[net]]\nswitch = \"lan0\"\nmac = \"nope\"").to_string();
    assert!(
        msg.contains("`net[0].mac`") && msg.contains("nope"),
        "{msg}"
    );
}

#[test]
fn bad_disk_entries_name_the_key() {
    match err("[[disks]]\nfile = \"../escape.img\"") {
        ConfigError::BadPath { key, problem, .. } => {
            assert_eq!(key, "disks[0].file");
            assert_eq!(problem, PathProblem::ParentComponent);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err("[[disks]]\nfile = \"/abs.img\""),
        ConfigError::BadPath { .. }
    ));
    assert!(matches!(
        err("[[disks]]\nreadonly = true"),
        ConfigError::MissingKey { .. }
    ));
    assert!(matches!(
        err("[[disks]]\nfile = \"a\"\nreadonly = 1"),
        ConfigError::Toml { .. }
    ));
}

#[test]
fn virtio_devices_fit_the_slots_and_the_spis() {
    let disks = |n: usize| {
        (0..n)
            .map(|i| format!("[[disks]]\nfile = \"d{i}\"\n"))
            .collect::<String>()
    };
    assert_eq!(with(&disks(32)).unwrap().disks.len(), 32);
    assert_eq!(
        err(&disks(33)),
        ConfigError::TooManyVirtioDevices { count: 33 }
    );
    // 17 devices: slot 16 uses SPI 32, which `spis = 32` does not have.
    assert_eq!(
        err(&format!("spis = 32\n{}", disks(17))),
        ConfigError::SpisTooFewForVirtio {
            spis: 32,
            needed: 64
        }
    );
    assert!(with(&format!("spis = 32\n{}", disks(16))).is_ok());
}

#[test]
fn passthrough_devices_may_not_take_a_virtio_slot_or_its_interrupt() {
    let dev_irq = "[[devices]]\nname = \"d\"\nbase = 0x1000_0000\nsize = 4096\ninterrupts = [17]\n";
    // One disk (slot 0, SPI 16): no clash.
    assert!(with(&format!("{dev_irq}[[disks]]\nfile = \"a\"")).is_ok());
    // A second virtio device (slot 1, SPI 17) clashes.
    match err(&format!(
        "{dev_irq}[[disks]]\nfile = \"a\"\n[[net]]\nswitch = \"lan0\""
    )) {
        ConfigError::Overlap { key, with } => {
            assert_eq!(key, "devices[0].interrupts[0]");
            assert!(with.contains("net[0]") && with.contains("17"), "{with}");
        }
        other => panic!("{other:?}"),
    }
    // A device mapped over the slot window of a used slot.
    let dev_ipa = "[[devices]]\nname = \"d\"\nbase = 0x1000_0000\nsize = 4096\nipa = 0x0a00_0000\n";
    assert!(
        with(dev_ipa).is_ok(),
        "no virtio device: the window is free"
    );
    assert!(matches!(
        err(&format!("{dev_ipa}[[net]]\nswitch = \"lan0\"")),
        ConfigError::Overlap { .. }
    ));
}
