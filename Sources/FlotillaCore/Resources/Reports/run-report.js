(function(){
var d=JSON.parse(document.getElementById('run-data').textContent),r=d.run,v=d.view;
var colors={succeeded:'#12b76a',failed:'#d92d20',unreachable:'#f79009',skipped:'#98a2b3',not_started:'#d0d5dd',cancelled:'#667085',running:'#2e90fa'};
function vis(s){return String(s).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g,function(c){var n=c.charCodeAt(0);return String.fromCharCode(n===127?0x2421:0x2400+n);});}
var ctl=['NUL','SOH','STX','ETX','EOT','ENQ','ACK','BEL','BS','HT','LF','VT','FF','CR','SO','SI','DLE','DC1','DC2','DC3','DC4','NAK','SYN','ETB','CAN','EM','SUB','ESC','FS','GS','RS','US'];
// Text into an HTML element: control characters (but tab, newline, return) as small labelled boxes, readable in any font.
function fill(e,txt){String(txt).split(/([\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f])/).forEach(function(part,i){
  if(i%2===0){if(part)e.appendChild(document.createTextNode(part));return;}
  var n=part.charCodeAt(0),c=document.createElement('span');c.className='ctl';c.title='U+00'+(n<16?'0':'')+n.toString(16).toUpperCase();c.textContent=n===127?'DEL':ctl[n];e.appendChild(c);});}
function el(t,a,txt){var e=document.createElement(t);for(var k in a||{})if(a[k]!=null)e.setAttribute(k,vis(a[k]));if(txt!=null)fill(e,txt);return e;}
function add(p,c){p.appendChild(c);return c;}
function badge(s){return el('span',{'class':'badge st-'+s},s);}
function batchName(i){return i==null?'not batched':'batch '+(i+1);}
// Summary
document.getElementById('what').textContent=vis((r.name?r.name+' \u2014 ':'')+r.kind+(r.target_version?' to '+r.target_version:''));
var sum=document.getElementById('summary');
function row(k,val,node){var tr=add(sum,el('tr',{'data-field':k}));add(tr,el('th',{},k));var td=add(tr,el('td'));if(node)td.appendChild(node);if(val!=null)fill(td,val);}
row('run',r.run_id);row('kind',r.kind+(r.name?' ('+r.name+')':''));row('target',r.target_version||'-');
row('outcome',null,badge(r.outcome));if(r.halt_reason)row('halt reason',r.halt_reason);
row('started',r.started_at||'-');row('finished',r.finished_at||'-');row('duration',v.duration||'-');
row('batches',String(v.batches.length));
var cards=document.getElementById('cards');
['targeted','succeeded','failed','unreachable','skipped','not_started','cancelled'].forEach(function(k){
  var c=add(cards,el('div',{'class':'card','data-count':k}));add(c,el('b',{},String(r.summary[k])));c.appendChild(document.createTextNode(k.replace('_',' ')));});
// Legend: the statuses present
var seen={};r.hosts.forEach(function(h){seen[h.status]=1;});
var legend=document.getElementById('legend');
Object.keys(colors).forEach(function(s){if(seen[s])add(legend,el('span',{'style':'--c:'+colors[s]},s.replace('_',' ')));});
if(seen.failed)add(legend,el('span',{'style':'--c:#912018'},'failing step'));
if(v.batches.some(function(b){return b.start!=null;}))add(legend,el('span',{'style':'--c:rgba(46,144,250,.25)'},'batch start to finish'));
// Timeline
var svg=document.getElementById('timeline'),ns='http://www.w3.org/2000/svg';
var W=1120,L=150,P=W-L-190,RH=22,GH=26,top=48,span=Math.max(v.span,1000);
function x(ms){return L+Math.max(0,Math.min(ms,span))/span*P;}
function s(t,a,txt,parent){var e=document.createElementNS(ns,t);for(var k in a)if(a[k]!=null)e.setAttribute(k,vis(a[k]));if(txt!=null)e.textContent=vis(txt);(parent||svg).appendChild(e);return e;}
function tip(e,txt){s('title',{},txt,e);}
function clock(ms){var t=Math.round(ms/1000),h=Math.floor(t/3600),m=Math.floor(t%3600/60),sec=t%60;return (h?h+':'+(m<10?'0':''):'')+m+':'+(sec<10?'0':'')+sec;}
var groups=[];v.batches.forEach(function(b){groups.push({index:b.index,label:b.label,batch:b,hosts:[]});});
var loose={index:null,label:'not batched',batch:null,hosts:[]};
v.hosts.forEach(function(h,i){var g=h.batch!=null&&groups[h.batch]?groups[h.batch]:loose;g.hosts.push(i);});
if(loose.hosts.length)groups.push(loose);
var height=top;groups.forEach(function(g){height+=GH+g.hosts.length*RH+6;});height+=8;
svg.setAttribute('width',W);svg.setAttribute('height',height);svg.setAttribute('viewBox','0 0 '+W+' '+height);
// Time axis and grid
var steps=[1,2,5,10,15,30,60,120,300,600,900,1800,3600,7200,10800,21600],tick=steps[steps.length-1]*1000;
for(var i=0;i<steps.length;i++){if(span/(steps[i]*1000)<=10){tick=steps[i]*1000;break;}}
var axis=s('g',{'id':'time-axis'});
s('text',{x:L,y:12,'class':'axis'},'minutes:seconds since the start, '+(v.start||'').replace('T',' ').replace('Z',' UTC'),axis);
for(var t=0;t<=span+1;t+=tick){s('line',{x1:x(t),y1:36,x2:x(t),y2:height-6,stroke:'#e4e7ec'},null,axis);
  s('text',{x:x(t),y:30,'text-anchor':'middle','class':'axis','data-tick':t},clock(t),axis);}
s('line',{x1:L,y1:36,x2:L+P,y2:36,stroke:'#98a2b3'},null,axis);
var y=top;
groups.forEach(function(g,gi){
  var gh=GH+g.hosts.length*RH;
  s('rect',{x:0,y:y,width:W,height:gh,fill:gi%2?'#ffffff':'#f5f7fa','data-batch-band':g.index==null?'none':g.index});
  var b=g.batch,label=g.label+' \u00b7 '+g.hosts.length+' host'+(g.hosts.length===1?'':'s')+(b&&b.duration?' \u00b7 '+b.duration:'')+(b&&b.start==null?' \u00b7 not started':'');
  if(b&&b.start!=null){var be=b.end!=null?b.end:v.span;
    var br=s('rect',{x:x(b.start),y:y+2,width:Math.max(2,x(be)-x(b.start)),height:gh-4,fill:'#2e90fa','fill-opacity':.09,'class':'batch-span','data-batch-span':b.index});
    tip(br,b.label+': '+clock(b.start)+' \u2192 '+(b.end!=null?clock(be):'not finished')+(b.duration?' ('+b.duration+')':''));
    [b.start,be].forEach(function(t){s('line',{x1:x(t),y1:y+2,x2:x(t),y2:y+gh-2,stroke:'#84adff','stroke-dasharray':'3 3'});});}
  s('text',{x:8,y:y+17,'class':'group','data-batch-label':g.index==null?'none':g.index},label);
  var ry=y+GH;
  g.hosts.forEach(function(i){var h=v.hosts[i];
    s('text',{x:L-8,y:ry+15,'text-anchor':'end','data-row':h.name},h.name);
    if(h.start!=null){
      var x1=x(h.start),x2=Math.max(x(h.end!=null?h.end:h.start),x1+3);
      var bar=s('rect',{x:x1,y:ry+4,width:x2-x1,height:14,rx:3,fill:colors[h.status]||'#98a2b3','data-host':h.name,'data-status':h.status,'data-batch':h.batch==null?'none':h.batch});
      tip(bar,h.name+' \u2014 '+h.status+(h.note?'\n'+h.note:'')+'\n'+clock(h.start)+' \u2192 '+clock(h.end!=null?h.end:h.start)+(h.duration?' ('+h.duration+')':''));
      h.steps.forEach(function(st,j){if(j>0&&st.start!=null&&x(st.start)>x1+1&&x(st.start)<x2-1)s('line',{x1:x(st.start),y1:ry+5,x2:x(st.start),y2:ry+17,stroke:'#ffffff','stroke-opacity':.8});});
      var lx=x2+6,text,cls='dim',attrs={};
      if(h.failed_step!=null){
        if(h.failed_step_start!=null){var fx=x(h.failed_step_start),fw=Math.max(3,x(h.failed_step_end!=null?h.failed_step_end:h.end)-fx);
          var fr=s('rect',{x:fx,y:ry+2,width:fw,height:18,rx:2,fill:'#912018','data-failed-step-bar':h.name});tip(fr,h.name+': '+h.note);}
        text='\u2716 '+h.failed_step;cls='fail';attrs['data-failed-step']=h.failed_step;
      }else if(h.status==='unreachable'){text='unreachable';}
      else{text=(h.duration||'')+(h.status==='running'?' \u00b7 '+(h.note&&h.note.indexOf('interrupted')===0?'interrupted':'running'):'');}
      attrs.x=lx;attrs.y=ry+15;attrs['class']=cls;attrs['data-label-for']=h.name;
      var lt=s('text',attrs,text);if(h.note)tip(lt,h.note);
    }else{
      var why=h.status==='not_started'?'not started':!h.note?h.status:h.note.indexOf(h.status)===0?h.note:h.status+': '+h.note;
      s('text',{x:L+6,y:ry+15,'class':'dim','data-row-note':h.name},why.length>120?why.slice(0,119)+'\u2026':why);
    }
    ry+=RH;});
  y+=gh+6;});
// Hosts
var hosts=document.getElementById('hosts');
r.hosts.forEach(function(h,i){var w=v.hosts[i];
  var det=add(hosts,el('details',{'data-host':h.name,'data-status':h.status,'data-batch':h.batch==null?'none':h.batch}));
  if(h.status==='failed'||h.status==='unreachable')det.open=true;
  var su=add(det,el('summary'));su.appendChild(badge(h.status));add(su,el('span',{'class':'host'},h.name));
  fill(su,(' '+h.address+' \u00b7 '+batchName(h.batch)+(w.duration?' \u00b7 '+w.duration:'')));
  if(h.from_version||h.to_version)add(det,el('div',{'class':'muted'},'st2 '+(h.from_version||'?')+' \u2192 '+(h.to_version||'?')));
  if(w.note)add(det,el('div',{'class':'note','data-note':h.name},w.note));
  if(!h.steps.length){if(w.pending.length)add(det,el('div',{'class':'muted','data-planned':h.name},'no step ran; planned: '+w.pending.join(', ')));return;}
  var tb=add(det,el('table',{'class':'steps'})),hr=add(tb,el('tr'));
  ['#','step','status','exit','attempts','started','duration'].forEach(function(c){add(hr,el('th',{},c));});
  h.steps.forEach(function(st,j){var tr=add(tb,el('tr',{'data-step':st.name,'data-status':st.status}));
    add(tr,el('td',{'class':'num'},String(j+1)));add(tr,el('td',{},st.name));add(add(tr,el('td')),badge(st.status));
    add(tr,el('td',{'class':'num'},st.exit_status==null?'-':String(st.exit_status)));add(tr,el('td',{'class':'num'},String(st.attempts)));
    add(tr,el('td',{},st.started_at||'-'));add(tr,el('td',{'class':'num'},w.steps[j].duration||'-'));});
  w.pending.forEach(function(name,j){var tr=add(tb,el('tr',{'data-step':name,'data-status':'pending'}));
    add(tr,el('td',{'class':'num'},String(h.steps.length+j+1)));add(tr,el('td',{},name));add(add(tr,el('td')),badge('pending'));
    for(var k=0;k<4;k++)add(tr,el('td',{},'-'));});
  h.steps.forEach(function(st){
    if(!st.stderr_tail&&!st.stdout_tail&&!(st.error&&st.status!=='succeeded'))return;
    add(det,el('h4',{},st.name+' \u2014 '+st.status));
    if(st.error&&st.status!=='succeeded')add(det,el('div',{'class':'note'},st.error));
    if(st.stderr_tail)add(det,el('pre',{'data-stream':'stderr','data-step':st.name},st.stderr_tail));
    if(st.stdout_tail)add(det,el('pre',{'data-stream':'stdout','data-step':st.name},st.stdout_tail));});
});
// Events
if(v.events.length){var ev=document.getElementById('events');add(ev,el('h2',{},'Events'));var et=add(ev,el('table',{'id':'event-list'}));
  v.events.forEach(function(e){var tr=add(et,el('tr'));add(tr,el('td',{},e.at||'-'));add(tr,el('td',{},e.kind));add(tr,el('td',{},e.message));});}
document.body.setAttribute('data-rendered','ok');
})();
