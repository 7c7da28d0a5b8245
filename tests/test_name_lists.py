"""The torch-free name lists the CLI and the menus read agree with the registries they stand in for."""
from ssm_lab.attack_registry import NORMS
from ssm_lab.attacks import ATTACKS
from ssm_lab.catalogue import ARCH_NAMES
from ssm_models import list_models
from ssm_models.choices import REFERENCE_CLASS


def test_the_catalogue_names_exactly_the_registered_architectures():
    assert sorted(ARCH_NAMES) == sorted(list_models())


def test_the_reference_importer_offers_only_registered_architectures():
    assert set(REFERENCE_CLASS) <= set(list_models()), sorted(set(REFERENCE_CLASS) - set(list_models()))


def test_every_attack_states_norms_from_the_registry_list():
    stray = {name: cls.norms for name, cls in ATTACKS.items() if not set(cls.norms) <= set(NORMS)}
    assert not stray, stray
