# aib-local elevated launcher: runs the embedded script as a scheduled task (as Packer
# does for elevated PowerShell), relays its output, and exits with the task's result.
# The wait is bounded by the task's execution time limit.
$ErrorActionPreference = 'Stop'
$id = '__ID__'
$script = Join-Path $env:SystemRoot "Temp\aib-local-elevated-$id.ps1"
$log = "$script.log"
[IO.File]::WriteAllBytes($script, [Convert]::FromBase64String('__SCRIPT_BASE64__'))
$name = "aib-local-$id"
$run = "/c powershell -NoProfile -ExecutionPolicy Bypass -File `"$script`" > `"$log`" 2>&1"
$action = New-ScheduledTaskAction -Execute 'cmd.exe' -Argument $run
$principal = New-ScheduledTaskPrincipal -UserId '__USER__' -LogonType __LOGON__ -RunLevel Highest
$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit (New-TimeSpan -Minutes 960)
Register-ScheduledTask -TaskName $name -Action $action -Principal $principal -Settings $settings -Force | Out-Null
Start-ScheduledTask -TaskName $name
$shown = 0
do {
  Start-Sleep -Milliseconds 500
  if (Test-Path $log) {
    $text = [IO.File]::ReadAllText($log)
    if ($text.Length -gt $shown) { Write-Output $text.Substring($shown).TrimEnd(); $shown = $text.Length }
  }
  $state = (Get-ScheduledTask -TaskName $name).State
} while ($state -eq 'Running' -or $state -eq 'Queued')
if (Test-Path $log) {
  $text = [IO.File]::ReadAllText($log)
  if ($text.Length -gt $shown) { Write-Output $text.Substring($shown).TrimEnd() }
}
$code = (Get-ScheduledTaskInfo -TaskName $name).LastTaskResult
Unregister-ScheduledTask -TaskName $name -Confirm:$false
Remove-Item -Force -ErrorAction SilentlyContinue $script, $log
exit $code
