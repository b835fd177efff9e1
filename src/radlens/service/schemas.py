"""Response shapes of the service API (they make the OpenAPI spec say what each field means)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class Health(BaseModel):
    status: str
    encoder_id: str
    preprocess_hash: str
    adapter: Optional[str]
    task: str
    task_kind: str
    classes: list[str]
    operating_point: str = Field(description="The operating point decisions use unless a request names another.")
    indexed_cases: int
    index_type: str
    metric: str


class Prediction(BaseModel):
    class_name: str
    probability: float = Field(description="Calibrated probability from the adapter.")
    threshold: float = Field(description="The operating point's threshold for this class.")
    decision: bool = Field(description="probability >= threshold")


class OperatingPointClass(BaseModel):
    class_name: str
    threshold: float
    target: Optional[float] = None
    sensitivity: Optional[float] = Field(None, description="Held-out (cross-fitted) sensitivity at this threshold.")
    sensitivity_ci_low: Optional[float] = None
    sensitivity_ci_high: Optional[float] = None
    specificity: Optional[float] = None
    specificity_ci_low: Optional[float] = None
    specificity_ci_high: Optional[float] = None
    ppv: Optional[float] = None
    npv: Optional[float] = None
    n_pos: Optional[int] = None
    n_neg: Optional[int] = None


class OperatingPoint(BaseModel):
    kind: str = Field(description="youden, sensitivity or specificity")
    classes: list[OperatingPointClass]


class Evidence(BaseModel):
    rank: int
    case_id: int = Field(description="Id of the indexed case; its thumbnail is at thumbnail_url.")
    similarity: float = Field(description="Cosine similarity (cosine index) or negative squared L2 distance.")
    labels: list[str]
    image_name: str
    sex: Optional[str] = None
    age: Optional[float] = None
    view: Optional[str] = None
    patient_id: Optional[str] = None
    thumbnail_url: str


class ImageInfo(BaseModel):
    name: str = Field(description="The uploaded file's base name, for display only (never used as a path).")
    sha256: str
    format: Optional[str]
    shape: list[int]
    thumbnail: str = Field(description="JPEG preview as a data: URI.")


class PredictResponse(BaseModel):
    image: ImageInfo
    encoder_id: str
    adapter: Optional[str]
    task: str
    predictions: list[Prediction]
    predicted_class: Optional[str] = None
    operating_point: OperatingPoint
    evidence: list[Evidence]
    filters: dict[str, Any]
    identical_cases_left_out: int = Field(description="Indexed copies of the uploaded file, not shown as evidence.")
    timings_ms: dict[str, float]


class Problem(BaseModel):
    detail: str
