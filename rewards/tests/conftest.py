import pytest
from django.core.files.storage import FileSystemStorage

from rewards.models import HistoryImport


@pytest.fixture(autouse=True)
def import_storage(monkeypatch, tmp_path):
    """Files uploaded for import go to the test's own folder, not the checkout's `.data/imports`."""
    folder = tmp_path / "imports"
    # The field took its storage when the models loaded: the test's folder replaces it there.
    monkeypatch.setattr(HistoryImport._meta.get_field("file"), "storage", FileSystemStorage(location=folder))
    return folder
