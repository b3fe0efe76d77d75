"""Well-known partition type identifiers and their friendly names.

GPT names and GUIDs were taken from GPT fdisk 1.0.9 (``sgdisk -t 1:CODE`` then ``sgdisk -i 1``
for each code), so ``type_name`` matches what ``sgdisk -i`` prints; the Android/Qualcomm entries
cross-checked against specs/gpt-mbr.md section 5. MBR names follow util-linux fdisk.
Qualcomm phones mostly use per-partition vendor GUIDs: identify partitions by name, not type.
"""

from __future__ import annotations

GPT_TYPES: dict[str, str] = {
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
    "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows RE",
    "AF9B60A0-1431-4F62-BC68-3311714A69AD": "Windows LDM data",
    "FE3A2A5D-4F32-41A7-B725-ACCC3285A309": "ChromeOS kernel",
    "3CB8E202-3B7E-47DD-8A3C-7FF2A13CFCEC": "ChromeOS root",
    "2E0A753D-9E48-43B0-8337-B15192CB1B5E": "ChromeOS reserved",
    "CAB6E88E-ABF3-4102-A07A-D4BB9BE3C1D3": "ChromeOS firmware",
    "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
    "8DA63339-0007-60C0-C436-083AC8230908": "Linux reserved",
    "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux /home",
    "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux x86 root (/)",
    "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux x86-64 root (/)",
    "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux ARM64 root (/)",
    "3B8F8425-20E0-4F3B-907F-1A25A76F98E8": "Linux /srv",
    "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3": "Linux ARM32 root (/)",
    "7FFEC5C9-2D00-49B7-8941-3EA10A5586B7": "Linux dm-crypt",
    "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
    "4D21B016-B534-45C2-A9FB-5C16E091FD2D": "Linux /var",
    "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
    "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI system partition",
    "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
    "21686148-6449-6E6F-744E-656564454649": "BIOS boot partition",
    "BC13C2FF-59E6-4262-A352-B275FD6F7172": "XBOOTLDR partition",
    "2568845D-2332-4675-BC39-8FA5A4748D15": "Android bootloader",
    "114EAFFE-1552-4022-B26E-9B053604CF84": "Android bootloader 2",
    "49A4D17F-93A3-45C1-A0DE-F50B2EBE2599": "Android boot 1",
    "4177C722-9E92-4AAB-8644-43502BFD5506": "Android recovery 1",
    "EF32A33B-A409-486C-9141-9FFB711F6266": "Android misc",
    "20AC26BE-20B7-11E3-84C5-6CFDB94711E9": "Android metadata",
    "38F428E6-D326-425D-9140-6E0EA133647C": "Android system 1",
    "A893EF21-E428-470A-9E55-0668FD91A2D9": "Android cache",
    "DC76DDA9-5AC1-491C-AF42-A82591580C0D": "Android data",
    "EBC597D0-2053-4B15-8B64-E0AAC75F4DB1": "Android persistent",
    "8F68CC74-C5E5-48DA-BE91-A0C8C15E9C80": "Android factory",
    "767941D0-2085-11E3-AD3B-6CFDB94711E9": "Android fastboot/tertiary",
    "AC6D7924-EB71-4DF8-B48D-E267B27148FF": "Android OEM",
    "C5A0AEEC-13EA-11E5-A1B1-001E67CA0C3C": "Android vendor",
    "BD59408B-4514-490D-BF12-9878D963F378": "Android config",
    "9FDAA6EF-4B3F-40D2-BA8D-BFF16BFB887B": "Android factory (alt)",
    "19A710A2-B3CA-11E4-B026-10604B889DCF": "Android meta",
    "193D1EA4-B3CA-11E4-B075-10604B889DCF": "Android EXT",
    "DEA0BA2C-CBDD-4805-B4F9-F428251C3E98": "Android SBL1",
    "8C6B52AD-8A9E-4398-AD09-AE916E53AE2D": "Android SBL2",
    "05E044DF-92F1-4325-B69E-374A82E97D6E": "Android SBL3",
    "400FFDCD-22E0-47E7-9A23-F16ED9382388": "Android APPSBL",
    "A053AA7F-40B8-4B1C-BA08-2F68AC71A4F4": "Android QSEE/tz",
    "E1A6A689-0C8D-4CC6-B4E8-55A4320FBD8A": "Android QHEE/hyp",
    "098DF793-D712-413D-9D4E-89D711772228": "Android RPM",
    "D4E0D938-B7FA-48C1-9D21-BC5ED5C4B203": "Android WDOG debug/sdi",
    "20A0C19C-286A-42FA-9CE7-F64C3226A794": "Android DDR",
    "A19F205F-CCD8-4B6D-8F1E-2D9BC24CFFB1": "Android CDT",
    "66C9B323-F7FC-48B6-BF96-6F32E335A428": "Android RAM dump",
    "303E6AC3-AF15-4C54-9E9B-D9A8FBECF401": "Android SEC",
    "C00EEF24-7709-43D6-9799-DD2B411E7A3C": "Android PMIC",
    "82ACC91F-357C-4A68-9C8F-689E1B1A23A1": "Android misc 1",
    "E2802D54-0545-E8A1-A1E8-C7A3E245ACD4": "Android misc 2",
    "65ADDCF4-0C5C-4D9A-AC2D-D90B5CBFCD03": "Android device info",
    "E6E98DA2-E22A-4D12-AB33-169E7DEAA507": "Android APDP",
    "ED9E8101-05FA-46B7-82AA-8D58770D200B": "Android MSADP",
    "11406F35-1173-4869-807B-27DF71802812": "Android DPO",
    "9D72D4E4-9958-42DA-AC26-BEA7A90B0434": "Android recovery 2",
    "6C95E238-E343-4BA8-B489-8681ED22AD0B": "Android persist",
    "EBBEADAF-22C9-E33B-8F5D-0E81686A68CB": "Android modem ST1",
    "0A288B1F-22C9-E33B-8F5D-0E81686A68CB": "Android modem ST2",
    "57B90A16-22C9-E33B-8F5D-0E81686A68CB": "Android FSC",
    "638FF8E2-22C9-E33B-8F5D-0E81686A68CB": "Android FSG 1",
    "2013373E-1AC4-4131-BFD8-B6A7AC638772": "Android FSG 2",
    "2C86E742-745E-4FDD-BFD8-B6A7AC638772": "Android SSD",
    "DE7D4029-0F5B-41C8-AE7E-F6C023A02B33": "Android keystore",
    "323EF595-AF7A-4AFA-8060-97BE72841BB9": "Android encrypt",
    "45864011-CF89-46E6-A445-85262E065604": "Android EKSST",
    "8ED8AE95-597F-4C8A-A5BD-A7FF8E4DFAA9": "Android RCT",
    "DF24E5ED-8C96-4B86-B00B-79667DC6DE11": "Android spare1",
    "7C29D3AD-78B9-452E-9DEB-D098D542F092": "Android spare2",
    "379D107E-229E-499D-AD4F-61F5BCF87BD4": "Android spare3",
    "0DEA65E5-A676-4CDF-823C-77568B577ED5": "Android spare4",
    "4627AE27-CFEF-48A1-88FE-99C3509ADE26": "Android raw resources",
    "20117F86-E985-4357-B9EE-374BC1D8487D": "Android boot 2",
    "86A7CB80-84E1-408C-99AB-694F1A410FC7": "Android FOTA",
    "97D7B011-54DA-4835-B3C4-917AD6E73D74": "Android system 2",
    "5594C694-C871-4B5F-90B1-690A6F68E0F7": "Android cache",
    "1B81E7E6-F50D-419B-A739-2AEEF8DA3335": "Android user data",
    "98523EC6-90FE-4C67-B50A-0FC59ED6F56D": "LG (Android) advanced flasher",
    "2644BCC0-F36A-4792-9533-1738BED53EE3": "Android PG1FS",
    "DD7C91E9-38C9-45C5-8A12-4A80F7E14057": "Android PG2FS",
    "7696D5B6-43FD-4664-A228-C563C4A1E8CC": "Android board info",
    "0D802D54-058D-4A20-AD2D-C7A362CEACD4": "Android MFG",
    "10A0C19C-516A-5444-5CE3-664C3226A794": "Android limits",
    "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
}

MBR_TYPES: dict[int, str] = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x05: "Extended",
    0x06: "FAT16",
    0x07: "HPFS/NTFS/exFAT",
    0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)",
    0x0E: "W95 FAT16 (LBA)",
    0x0F: "W95 Ext'd (LBA)",
    0x82: "Linux swap / Solaris",
    0x83: "Linux",
    0x85: "Linux extended",
    0x8E: "Linux LVM",
    0xEE: "GPT",
    0xEF: "EFI (FAT-12/16/32)",
    0xFD: "Linux raid autodetect",
}

EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
PROTECTIVE_TYPE = 0xEE
UNUSED_GUID = "00000000-0000-0000-0000-000000000000"
MS_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def gpt_type_name(type_guid: str) -> str:
    """Friendly name of a GPT type GUID ("" when unknown; case-insensitive)."""
    return GPT_TYPES.get(type_guid.upper(), "")


def mbr_type_name(type_byte: int) -> str:
    """Friendly name of an MBR partition type byte ("" when unknown)."""
    return MBR_TYPES.get(type_byte, "")
