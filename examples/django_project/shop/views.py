from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .tasks import robust_task


@csrf_exempt
@require_POST
def enqueue(request: HttpRequest) -> JsonResponse:
    """Send ``n`` robust_task messages (odd ids retry, negative ids fail for good)."""
    try:
        count = int(request.GET.get("n", "10"))
    except ValueError:
        return JsonResponse({"error": "n must be an integer"}, status=400)
    if not 1 <= count <= 1000:
        return JsonResponse({"error": "n must be between 1 and 1000"}, status=400)
    ids = [robust_task.send(data_id).message_id for data_id in range(-1, count - 1)]
    return JsonResponse({"sent": len(ids), "message_ids": ids})
