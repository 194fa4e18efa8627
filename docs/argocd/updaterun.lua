-- Argo CD health of a patchwarden.io UpdateRun (see docs/gitops.md).
local hs = {}
local phase = obj.status and obj.status.phase or "Pending"
hs.message = (obj.status and obj.status.message) or phase
if phase == "Succeeded" or phase == "Cancelled" then
  hs.status = "Healthy"
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
return hs
